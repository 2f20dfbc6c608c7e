package report

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/profcap/profcap/bundle"
)

func TestScratchRender(t *testing.T) {
	dir := os.Getenv("RENDER_BUNDLE")
	if dir == "" {
		t.Skip()
	}
	m, err := bundle.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, m); err != nil {
		t.Fatal(err)
	}
	s, err := Summarize(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + strings.Join(SummaryLines(s), "\n"))
	if os.Getenv("RENDER_JSON") != "" {
		b, _ := json.MarshalIndent(s, "", " ")
		t.Log(string(b))
	}
}
