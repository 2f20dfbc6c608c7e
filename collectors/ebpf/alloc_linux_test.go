//go:build linux && amd64

package ebpf

import (
	"bufio"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cebpf "github.com/cilium/ebpf"
	"github.com/google/pprof/profile"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/testreq"
)

var (
	allocOnce sync.Once
	allocBin  string
	allocErr  error
)

// buildAllocTarget compiles testdata/alloc.c with frame pointers.
func buildAllocTarget(t testing.TB) string {
	t.Helper()
	gcc := testreq.Command(t, "gcc")
	allocOnce.Do(func() {
		allocBin = filepath.Join(binDir, "alloc")
		out, err := exec.Command(gcc, "-O1", "-g", "-fno-omit-frame-pointer", "testdata/alloc.c", "-o", allocBin).CombinedOutput()
		if err != nil {
			allocErr, allocBin = err, string(out)
		}
	})
	if allocErr != nil {
		t.Fatalf("building the allocation target: %v: %s", allocErr, allocBin)
	}
	return allocBin
}

// counters are what a target reports about itself: "[PID ]NAME T CPU V..."
// lines (CLOCK_REALTIME and CPU nanoseconds, then its counters).
type counters struct {
	mu    sync.Mutex
	lines map[string][]counterLine // by "PID NAME" or "NAME"
}

type counterLine struct {
	at  time.Time
	cpu time.Duration
	v   []float64
}

func readCounters(r io.Reader) *counters {
	c := &counters{lines: map[string][]counterLine{}}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			key := ""
			if len(f) > 0 {
				if _, err := strconv.Atoi(f[0]); err == nil {
					key, f = f[0]+" ", f[1:]
				}
			}
			if len(f) < 3 {
				continue
			}
			key += f[0]
			ts, err1 := strconv.ParseInt(f[1], 10, 64)
			cpu, err2 := strconv.ParseInt(f[2], 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			l := counterLine{at: time.Unix(0, ts), cpu: time.Duration(cpu)}
			for _, s := range f[3:] {
				v, _ := strconv.ParseFloat(s, 64)
				l.v = append(l.v, v)
			}
			c.mu.Lock()
			c.lines[key] = append(c.lines[key], l)
			c.mu.Unlock()
		}
	}()
	return c
}

// at interpolates the counters of key at t (false outside what was read).
func (c *counters) at(key string, t time.Time) (counterLine, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ls := c.lines[key]
	for i := 1; i < len(ls); i++ {
		a, b := ls[i-1], ls[i]
		if t.Before(a.at) || t.After(b.at) {
			continue
		}
		f := 0.0
		if d := b.at.Sub(a.at); d > 0 {
			f = float64(t.Sub(a.at)) / float64(d)
		}
		out := counterLine{at: t, cpu: a.cpu + time.Duration(f*float64(b.cpu-a.cpu))}
		for j := range a.v {
			out.v = append(out.v, a.v[j]+f*(b.v[j]-a.v[j]))
		}
		return out, true
	}
	return counterLine{}, false
}

// between is the change of key's counters from from to to.
func (c *counters) between(t testing.TB, key string, from, to time.Time) counterLine {
	t.Helper()
	for range 40 {
		a, ok1 := c.at(key, from)
		b, ok2 := c.at(key, to)
		if ok1 && ok2 {
			d := counterLine{cpu: b.cpu - a.cpu}
			for j := range a.v {
				d.v = append(d.v, b.v[j]-a.v[j])
			}
			return d
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the target reported no %q counters around %s..%s", key, from.Format(time.StampMicro), to.Format(time.StampMicro))
	return counterLine{}
}

// startCounting runs a target whose stdout is counters; killed at the end.
func startCounting(t testing.TB, bin string, args ...string) (*exec.Cmd, *counters, io.Writer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, k := range childrenOf(cmd.Process.Pid) {
			if p, err := os.FindProcess(k); err == nil {
				_ = p.Kill()
			}
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	c := readCounters(out)
	time.Sleep(200 * time.Millisecond)
	return cmd, c, in
}

// funcValue sums value i of the samples whose stack has fn.
func funcValue(p *profile.Profile, i int, fn string) int64 {
	return sum(p, i, func(s *profile.Sample) bool { return hasFunc(s, fn) })
}

func sampleIndex(t testing.TB, p *profile.Profile, typ string) int {
	t.Helper()
	for i, st := range p.SampleType {
		if st.Type == typ {
			return i
		}
	}
	t.Fatalf("no %s in %v", typ, p.SampleType)
	return -1
}

// within says whether got is within frac of want.
func within(got, want, frac float64) bool { return math.Abs(got-want) <= frac*want }

// TestAllocProgramLoads loads the allocation tracer into the running
// kernel (the verifier's verdict; uprobe sessions need Linux 6.13+).
func TestAllocProgramLoads(t *testing.T) {
	needEBPF(t)
	if err := allocMachineCheck(); err != nil {
		t.Fatal(err)
	}
	spec, err := loadAlloc()
	if err != nil {
		t.Fatal(err)
	}
	if p := spec.Programs["on_alloc"]; p == nil || p.AttachType != cebpf.AttachType(bpfTraceUprobeSession) {
		t.Fatalf("on_alloc: %+v", p)
	}
}

// TestAllocTables: the fixed-point exponential draw has the sampling
// period as its mean, and the weight table is x/(1-exp(-x)).
func TestAllocTables(t *testing.T) {
	l, w := allocTables()
	// The program's draw, in Go: -ln(u) for u = r/2^32 over all r (in
	// steps), times the mean.
	const mean = 512 << 10
	var total float64
	n := 0
	for r := uint64(1); r < 1<<32; r += 4099 {
		b := 63 - leadingZeros64(r)
		norm := uint32(r << (31 - b))
		j := (norm >> 23) & 0xff
		tq := (uint64(32-b) << 16) - uint64(l[j])
		e := (tq * 45426) >> 16
		total += float64((mean * e) >> 16)
		n++
	}
	if got := total / float64(n); !within(got, mean, 0.01) {
		t.Errorf("mean draw %.0f, want %d within 1%%", got, mean)
	}
	for _, x := range []float64{0.05, 0.5, 1, 4, 15.9} {
		i := int(x * 64)
		if got, want := float64(w[i])/65536, (float64(i)/64)/-math.Expm1(-float64(i)/64); !within(got, want, 1e-4) {
			t.Errorf("weight(%g) = %g, want %g", x, got, want)
		}
	}
}

func leadingZeros64(x uint64) int {
	n := 0
	for i := 63; i >= 0 && x&(1<<uint(i)) == 0; i-- {
		n++
	}
	return n
}

// TestProbePoint: where the entry points of glibc 2.36 and jemalloc 5.3
// are probed (their first bytes, from objdump).
func TestProbePoint(t *testing.T) {
	for _, c := range []struct {
		name string
		code []byte
		role uint64
		skip int
		emu  bool
	}{
		{"glibc malloc: push %r12", []byte{0x41, 0x54, 0x55, 0x53}, rAlloc0, 0, true},
		{"glibc free: test %rdi,%rdi; je", []byte{0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0, 0, 0, 0x55}, rFree, 3, true},
		{"glibc posix_memalign: cmpb $0,x(%rip); push %r12", []byte{0x80, 0x3d, 1, 2, 0x14, 0, 0, 0x41, 0x54}, rMemptr, 7, true},
		{"jemalloc malloc: cmp $0x1000,%rdi; ja", []byte{0x48, 0x81, 0xff, 0, 0x10, 0, 0, 0x77, 0x77}, rAlloc0, 7, true},
		{"jemalloc rallocx: xor %ecx,%ecx; jmp", []byte{0x31, 0xc9, 0xe9, 0x79, 0x36, 0xff, 0xff}, rRealloc, 2, true},
		{"xor of an argument: not passed over", []byte{0x31, 0xff, 0xe9, 0, 0, 0, 0}, rAlloc0, 0, false},
		{"mov first: single-stepped", []byte{0x48, 0x89, 0xfb, 0x55}, rAlloc0, 0, false},
	} {
		skip, emu := probePoint(c.code, c.role)
		if skip != c.skip || emu != c.emu {
			t.Errorf("%s: probe at +%d (emulated %v), want +%d (%v)", c.name, skip, emu, c.skip, c.emu)
		}
	}
}

// TestAllocsAndHeap: a C program churns small allocations in churn_small
// and leaks 1-8 KiB blocks in leak_slowly, 8 MB a second; over a 6 s
// window the allocs profile ranks churn_small first by bytes, and the
// heap profile gives leak_slowly's retained bytes within 30% of what the
// program says it leaked during the window.
func TestAllocsAndHeap(t *testing.T) {
	needEBPF(t)
	cmd, cnt, _ := startCounting(t, buildAllocTarget(t), "leak", "120", "8e6")
	res, w := record(t, New(Options{}), cmd.Process.Pid, 6*time.Second, bundle.Allocs, bundle.Heap)
	truth := cnt.between(t, "stat", w.Start, w.Ended())
	allocs, heap := res[bundle.Allocs].Profile, res[bundle.Heap].Profile
	for _, c := range heap.Comments {
		t.Log(c)
	}
	t.Logf("note: %s", res[bundle.Heap].Note)
	space := sampleIndex(t, allocs, "alloc_space")
	objs := sampleIndex(t, allocs, "alloc_objects")
	churn, leak := funcValue(allocs, space, "churn_small"), funcValue(allocs, space, "leak_slowly")
	t.Logf("allocs: churn_small %s (%d objects; the program: %s, %.0f), leak_slowly %s (the program: %s)",
		mb(uint64(churn)), funcValue(allocs, objs, "churn_small"), mb(uint64(truth.v[1])), truth.v[0], mb(uint64(leak)), mb(uint64(truth.v[3])))
	top(t, allocs, space, 4)
	if churn <= leak {
		t.Errorf("allocs: churn_small %d bytes, not above leak_slowly's %d", churn, leak)
	}
	if !within(float64(churn), truth.v[1], 0.3) {
		t.Errorf("allocs: churn_small %s, the program allocated %s", mb(uint64(churn)), mb(uint64(truth.v[1])))
	}
	if allocs.PeriodType.Type != "space" || allocs.Period != 512<<10 || allocs.DefaultSampleType != "alloc_space" {
		t.Errorf("allocs period %v %d, default %q", allocs.PeriodType, allocs.Period, allocs.DefaultSampleType)
	}
	inuse := sampleIndex(t, heap, "inuse_space")
	held, churnHeld := funcValue(heap, inuse, "leak_slowly"), funcValue(heap, inuse, "churn_small")
	t.Logf("heap: leak_slowly %s (%d objects), the program leaked %s (%.0f blocks) in the window; churn_small %s",
		mb(uint64(held)), funcValue(heap, sampleIndex(t, heap, "inuse_objects"), "leak_slowly"), mb(uint64(truth.v[3])), truth.v[2], mb(uint64(churnHeld)))
	top(t, heap, inuse, 3)
	if !within(float64(held), truth.v[3], 0.3) {
		t.Errorf("heap: leak_slowly holds %s, the program leaked %s in the window: not within 30%%", mb(uint64(held)), mb(uint64(truth.v[3])))
	}
	if float64(churnHeld) > 0.1*truth.v[3] {
		t.Errorf("heap: churn_small holds %s: it frees everything", mb(uint64(churnHeld)))
	}
}

