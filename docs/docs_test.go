// Package docs holds profcap's documentation. Its test runs the commands the
// pages show, so the docs cannot drift from the tool.
//
// Convention: a fenced block marked ```console holds commands that run
// against the demo cluster; every line in it that starts with "profcap " or
// "$ profcap " is run, in the order of the page, from a directory that holds
// the demo cluster's profcap.yaml and .pids/. Anything that needs what the
// demo lacks (a perf-able pid, a Pyroscope server, a Rust service) goes in a
// ```sh block and is not run. A command must exit 0; one that may exit 3
// (partial) says so with a trailing comment "# exits 3".
package docs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// maxDuration caps every --duration in the docs so the test stays short.
const maxDuration = 2 * time.Second

// docCommand is one command found in a ```console block.
type docCommand struct {
	file string // page, e.g. quickstart.md
	line int    // 1-based line in the page
	text string // the command as written, without "$ "
}

func (c docCommand) String() string { return fmt.Sprintf("%s:%d: %s", c.file, c.line, c.text) }

// extractCommands returns the profcap commands of the ```console blocks of
// one page. Lines ending in a backslash continue on the next line.
func extractCommands(file string, data []byte) ([]docCommand, error) {
	var out []docCommand
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	inConsole, inOther := false, false
	fence := "" // the open block's fence
	var pending *docCommand
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		// A fence is a line of three or more backticks, plus an info string
		// without backticks when it opens a block (CommonMark); so inline
		// code such as "```` ```console ````" is not one.
		if m := fenceRE.FindStringSubmatch(line); m != nil {
			ticks, info := m[1], strings.TrimSpace(m[2])
			switch {
			case inConsole || inOther:
				if info != "" || len(ticks) < len(fence) {
					break // text inside the block
				}
				if pending != nil {
					return nil, fmt.Errorf("%s:%d: block ends inside a continued command", file, n)
				}
				inConsole, inOther = false, false
				continue
			case info == "console":
				inConsole, fence = true, ticks
				continue
			default:
				inOther, fence = true, ticks
				continue
			}
		}
		if !inConsole {
			continue
		}
		if pending != nil {
			cont := strings.HasSuffix(line, "\\")
			pending.text += " " + strings.TrimSpace(strings.TrimSuffix(line, "\\"))
			if !cont {
				out = append(out, *pending)
				pending = nil
			}
			continue
		}
		cmd := strings.TrimPrefix(line, "$ ")
		if !strings.HasPrefix(cmd, "profcap ") {
			continue // output shown in the block, or a command that is not profcap's
		}
		c := docCommand{file: file, line: n, text: cmd}
		if strings.HasSuffix(cmd, "\\") {
			c.text = strings.TrimSpace(strings.TrimSuffix(cmd, "\\"))
			pending = &c
			continue
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if inConsole || inOther {
		return nil, fmt.Errorf("%s: unterminated code block", file)
	}
	return out, nil
}

var fenceRE = regexp.MustCompile("^(`{3,})([^`]*)$")

var durationRE = regexp.MustCompile(`--duration(=|\s+)(\S+)`)

// shorten caps --duration at maxDuration.
func shorten(cmd string) string {
	return durationRE.ReplaceAllStringFunc(cmd, func(m string) string {
		sub := durationRE.FindStringSubmatch(m)
		d, err := time.ParseDuration(strings.Trim(sub[2], `'"`))
		if err != nil || d <= maxDuration {
			return m
		}
		return "--duration" + sub[1] + maxDuration.String()
	})
}

// allowsPartial reports whether the page says the command may exit 3.
func allowsPartial(cmd string) bool { return strings.Contains(cmd, "# exits 3") }

func TestExtractCommands(t *testing.T) {
	page := "text\n```console\n$ profcap targets\norchestration-1  pprof ...\nprofcap record --all \\\n  --duration 60s\n$ go tool pprof -top x\n```\n" +
		"```sh\nprofcap record --pid 42\n```\n```console\nprofcap flame capture # exits 3\n```\n"
	got, err := extractCommands("p.md", []byte(page))
	if err != nil {
		t.Fatal(err)
	}
	want := []docCommand{
		{"p.md", 3, "profcap targets"},
		{"p.md", 5, "profcap record --all --duration 60s"},
		{"p.md", 13, "profcap flame capture # exits 3"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	if s := shorten("profcap record --duration 60s --all"); s != "profcap record --duration 2s --all" {
		t.Errorf("shorten: %q", s)
	}
	if s := shorten("profcap record --duration=1s"); s != "profcap record --duration=1s" {
		t.Errorf("shorten kept a short duration: %q", s)
	}
	if !allowsPartial(want[2].text) || allowsPartial(want[0].text) {
		t.Error("allowsPartial")
	}
	inline := "Blocks marked ```` ```console ```` are run.\n```sh\nprofcap record --pid 1\n````\n"
	if got, err := extractCommands("inline.md", []byte(inline)); err != nil || len(got) != 0 {
		t.Errorf("inline code and a longer closing fence: got %v, %v", got, err)
	}
	if _, err := extractCommands("bad.md", []byte("```console\nprofcap x\n")); err == nil {
		t.Error("an unterminated block is not an error")
	}
}

// TestDocCommands builds profcap, starts the demo cluster and runs every
// command of every ```console block of docs/*.md.
func TestDocCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the demo cluster")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the demo cluster and perf checks are Linux-only")
	}
	pages, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(pages)
	byPage := map[string][]docCommand{}
	total := 0
	for _, p := range pages {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		cmds, err := extractCommands(p, data)
		if err != nil {
			t.Fatal(err)
		}
		byPage[p] = cmds
		total += len(cmds)
	}
	if total == 0 {
		t.Fatal("no ```console commands found in docs/*.md")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	binDir := filepath.Join(tmp, "bin")
	bin := filepath.Join(binDir, "profcap")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "../cmd/profcap")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cluster := filepath.Join(tmp, "cluster")
	start := exec.CommandContext(ctx, bin, "demo", "--detach", "--free-ports", "--dir", cluster)
	if out, err := start.CombinedOutput(); err != nil {
		t.Fatalf("profcap demo --detach: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		stop := exec.Command(bin, "demo", "--stop", "--dir", cluster)
		if out, err := stop.CombinedOutput(); err != nil {
			t.Errorf("profcap demo --stop: %v\n%s", err, out)
		}
	})

	shell, args := "sh", []string{"-c"}
	if b, err := exec.LookPath("bash"); err == nil {
		shell, args = b, []string{"-o", "pipefail", "-c"}
	}
	env := append(os.Environ(), "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"))

	for _, p := range pages {
		if len(byPage[p]) == 0 {
			continue
		}
		// Each page runs in its own directory that sees the cluster's
		// targets file and .pids/, so bundle names cannot collide.
		dir := filepath.Join(tmp, "run", strings.TrimSuffix(p, ".md"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"profcap.yaml", ".pids"} {
			if err := os.Symlink(filepath.Join(cluster, f), filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range byPage[p] {
			line := shorten(c.text)
			cctx, ccancel := context.WithTimeout(ctx, 45*time.Second)
			cmd := exec.CommandContext(cctx, shell, append(args, line)...)
			cmd.Dir, cmd.Env = dir, env
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			t0 := time.Now()
			err := cmd.Run()
			ccancel()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("%v: %v", c, err)
			}
			t.Logf("%v: exit %d in %.1fs", c, code, time.Since(t0).Seconds())
			if os.Getenv("PROFCAP_DOCS_VERBOSE") != "" {
				t.Logf("output:\n%s", out.String())
			}
			if code != 0 && !(code == 3 && allowsPartial(c.text)) {
				tail := out.String()
				if len(tail) > 3000 {
					tail = "…" + tail[len(tail)-3000:]
				}
				t.Errorf("docs/%s:%d: %q exited with status %d:\n%s", c.file, c.line, line, code, tail)
			}
		}
	}
}

// The benchmarks below measure what Go's mutex and block profiles cost the
// service that turns them on (docs/go-services.md quotes them). Reproduce:
//
//	go test ./docs -run '^$' -bench 'MutexProfile|BlockProfile' -count 3

// BenchmarkMutexProfile: two or more goroutines (GOMAXPROCS of them) take
// turns on one sync.Mutex, with a little work under the lock, so most
// Unlocks hand over a contended lock: the worst case for the mutex profile.
func BenchmarkMutexProfile(b *testing.B) {
	for _, fraction := range []int{0, 100, 5, 1} {
		b.Run(fmt.Sprintf("fraction=%d", fraction), func(b *testing.B) {
			old := runtime.SetMutexProfileFraction(fraction)
			defer runtime.SetMutexProfileFraction(old)
			var mu sync.Mutex
			shared := 0
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					mu.Lock()
					for i := 0; i < 50; i++ {
						shared += i
					}
					mu.Unlock()
				}
			})
			_ = shared
		})
	}
}

// BenchmarkBlockProfile: an unbuffered channel ping-pong between two
// goroutines, so every operation blocks for a few microseconds: the worst
// case for the block profile. rate is runtime.SetBlockProfileRate's argument
// in nanoseconds (1 = every event; 100000 = every event of 100 µs or more
// and a proportional sample of shorter ones).
func BenchmarkBlockProfile(b *testing.B) {
	for _, rate := range []int{0, 100000, 10000, 1} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			runtime.SetBlockProfileRate(rate)
			defer runtime.SetBlockProfileRate(0)
			ping, pong := make(chan int), make(chan int)
			go func() {
				for v := range ping {
					pong <- v
				}
				close(pong)
			}()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ping <- i
				<-pong
			}
			b.StopTimer()
			close(ping)
			<-pong
		})
	}
}
