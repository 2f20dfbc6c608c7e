package taskdump

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/collectors"
	"github.com/profcap/profcap/collectors/tokioconsole"
	"github.com/profcap/profcap/targets"
)

func TestScratchConsole(t *testing.T) {
	addr := os.Getenv("CONSOLE")
	if addr == "" {
		t.Skip()
	}
	c := tokioconsole.New(tokioconsole.Options{})
	w := collectors.NewWindow(3*time.Second, time.Second)
	c.Collect(context.Background(), w, &targets.Target{Name: "x", TokioConsole: addr}, []bundle.Kind{bundle.Async}, func(r collectors.Result) {
		fmt.Println(r.Status, r.Err)
		for _, s := range r.Profile.Sample {
			fmt.Println(s.Location[0].Line[0].Function.Name, "|", s.Location[1].Line[0].Function.Name, s.Value, s.Label, s.NumLabel)
		}
	})
}
