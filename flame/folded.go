package flame

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// WriteFolded writes the tree as folded stacks for the selected sample type:
// one "frame;...;frame COUNT" line per path with a positive self value, root
// first, sorted bytewise: the input of flamegraph.pl and inferno. The
// synthetic root is left out; a ';' inside a frame name is written as ':'
// so the line splits back into the same frames.
func WriteFolded(w io.Writer, t *Tree, opt Options) error {
	if t == nil {
		return fmt.Errorf("no tree")
	}
	si := t.Selected
	var lines []string
	var path []string
	var walk func(n *Node)
	walk = func(n *Node) {
		path = append(path, strings.ReplaceAll(n.Name, ";", ":"))
		if v := n.Self(si); v > 0 {
			lines = append(lines, strings.Join(path, ";")+" "+strconv.FormatInt(v, 10))
		}
		for _, c := range n.Children {
			walk(c)
		}
		path = path[:len(path)-1]
	}
	for _, c := range t.Root.Children {
		walk(c)
	}
	slices.Sort(lines)
	bw := bufio.NewWriterSize(w, 64<<10)
	for _, l := range lines {
		bw.WriteString(l)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// SpeedscopeSchema is the value of "$schema" that speedscope detects files by.
const SpeedscopeSchema = "https://www.speedscope.app/file-format-schema.json"

type ssFile struct {
	Schema             string      `json:"$schema"`
	Shared             ssShared    `json:"shared"`
	Profiles           []ssProfile `json:"profiles"`
	Name               string      `json:"name,omitempty"`
	ActiveProfileIndex int         `json:"activeProfileIndex"`
	Exporter           string      `json:"exporter,omitempty"`
}

type ssShared struct {
	Frames []ssFrame `json:"frames"`
}

type ssFrame struct {
	Name string `json:"name"`
}

type ssProfile struct {
	Type       string  `json:"type"`
	Name       string  `json:"name"`
	Unit       string  `json:"unit"`
	StartValue int64   `json:"startValue"`
	EndValue   int64   `json:"endValue"`
	Samples    [][]int `json:"samples"`
	Weights    []int64 `json:"weights"`
}

// speedscopeUnit maps a pprof unit onto one speedscope knows.
func speedscopeUnit(u string) string {
	switch u {
	case "nanoseconds", "microseconds", "milliseconds", "seconds", "bytes":
		return u
	}
	return "none"
}

// WriteSpeedscope writes the tree in speedscope's file format: one "sampled"
// profile per sample type, sharing one frame table, the selected sample type
// active. Each path with a positive self value becomes one sample.
func WriteSpeedscope(w io.Writer, t *Tree, opt Options) error {
	if t == nil {
		return fmt.Errorf("no tree")
	}
	f := ssFile{Schema: SpeedscopeSchema, Name: t.Title, ActiveProfileIndex: t.Selected, Exporter: "profcap"}
	frameIdx := map[string]int{}
	nt := len(t.SampleTypes)
	profs := make([]ssProfile, nt)
	for i, st := range t.SampleTypes {
		profs[i] = ssProfile{Type: "sampled", Name: st.Type, Unit: speedscopeUnit(st.Unit), Samples: [][]int{}, Weights: []int64{}}
	}
	var stack []int
	var walk func(n *Node)
	walk = func(n *Node) {
		id, ok := frameIdx[n.Name]
		if !ok {
			id = len(f.Shared.Frames)
			frameIdx[n.Name] = id
			f.Shared.Frames = append(f.Shared.Frames, ssFrame{Name: n.Name})
		}
		stack = append(stack, id)
		var shared []int
		for i := range nt {
			if v := n.Self(i); v > 0 {
				if shared == nil {
					shared = slices.Clone(stack)
				}
				profs[i].Samples = append(profs[i].Samples, shared)
				profs[i].Weights = append(profs[i].Weights, v)
				profs[i].EndValue += v
			}
		}
		for _, c := range n.Children {
			walk(c)
		}
		stack = stack[:len(stack)-1]
	}
	for _, c := range t.Root.Children {
		walk(c)
	}
	if f.Shared.Frames == nil {
		f.Shared.Frames = []ssFrame{}
	}
	f.Profiles = profs
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(&f); err != nil {
		return err
	}
	return bw.Flush()
}
