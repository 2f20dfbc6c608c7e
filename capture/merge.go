package capture

import (
	"context"
	"fmt"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/pprofutil"
)

// mergeAll writes merged/KIND.pb.gz for every kind captured from at least
// one target. Profiles are read back from the bundle one at a time, so
// memory holds one merge and one input, never every profile at once.
func mergeAll(ctx context.Context, w *bundle.Writer, emit func(Event), enrich Enrich) {
	m := w.Manifest()
	for _, k := range bundle.AllKinds {
		if ctx.Err() != nil {
			return
		}
		var mg pprofutil.Merger
		var names []string
		for _, bt := range m.Targets {
			if ctx.Err() != nil {
				return
			}
			for _, p := range bt.Profiles {
				if p.Kind != k || p.Path == "" {
					continue
				}
				pr, err := bundle.LoadProfile(w.Dir(), p.Path)
				if err != nil {
					emit(Event{Type: EventNote, Kind: k, Msg: fmt.Sprintf("merging %s: %v", k, err)})
					continue
				}
				if enrich != nil {
					enrich(w.Dir(), bt, pr)
				}
				pprofutil.LabelSamples(pr, "target", bt.Name)
				if err := mg.Add(pr); err != nil {
					emit(Event{Type: EventNote, Kind: k, Target: bt.Name,
						Msg: fmt.Sprintf("%s of %s left out of the merge: %v", k, bt.Name, err)})
					continue
				}
				names = append(names, bt.Name)
			}
		}
		acc, err := mg.Result()
		if err != nil {
			emit(Event{Type: EventNote, Kind: k, Msg: fmt.Sprintf("merging %s: %v", k, err)})
			continue
		}
		if acc == nil {
			continue
		}
		// Merging sums the targets' durations; the merge covers one window.
		if st, err := time.Parse(bundle.TimeFormat, m.Window.Start); err == nil {
			acc.TimeNanos = st.UnixNano()
			if en, err := time.Parse(bundle.TimeFormat, m.Window.End); err == nil {
				acc.DurationNanos = en.Sub(st).Nanoseconds()
			}
		}
		rel := "merged/" + string(k) + ".pb.gz"
		if _, err := w.WriteProfile(rel, acc); err != nil {
			emit(Event{Type: EventNote, Kind: k, Msg: fmt.Sprintf("writing %s: %v", rel, err)})
			continue
		}
		w.AddMerged(bundle.Merged{Kind: k, Path: rel, Targets: names})
		emit(Event{Type: EventMerged, Kind: k, Samples: len(acc.Sample), Msg: rel})
	}
}
