package consolepb

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// TestWireCompatible pins every name and field number profcap relies on to
// console-api's (tokio-rs/console console-api/proto/*.proto, as summarised
// in the shared format notes): a change here breaks talking to
// console-subscriber.
func TestWireCompatible(t *testing.T) {
	fields := map[string]map[string]int{
		"rs.tokio.console.common.Id":                           {"id": 1},
		"rs.tokio.console.common.MetaId":                       {"id": 1},
		"rs.tokio.console.common.SpanId":                       {"id": 1},
		"rs.tokio.console.common.Location":                     {"file": 1, "module_path": 2, "line": 3, "column": 4},
		"rs.tokio.console.common.Field":                        {"str_name": 1, "name_idx": 2, "debug_val": 3, "str_val": 4, "u64_val": 5, "i64_val": 6, "bool_val": 7, "metadata_id": 8},
		"rs.tokio.console.common.Metadata":                     {"name": 1, "target": 2, "module_path": 3, "location": 4, "kind": 5, "level": 6, "field_names": 7},
		"rs.tokio.console.common.PollStats":                    {"polls": 1, "first_poll": 3, "last_poll_started": 4, "last_poll_ended": 5, "busy_time": 6},
		"rs.tokio.console.common.RegisterMetadata":             {"metadata": 1},
		"rs.tokio.console.common.RegisterMetadata.NewMetadata": {"id": 1, "metadata": 2},
		"rs.tokio.console.tasks.TaskUpdate":                    {"new_tasks": 1, "stats_update": 3, "dropped_events": 4},
		"rs.tokio.console.tasks.Task":                          {"id": 1, "metadata": 2, "kind": 3, "fields": 4, "parents": 5, "location": 6},
		"rs.tokio.console.tasks.Stats": {"created_at": 1, "dropped_at": 2, "wakes": 3, "waker_clones": 4, "waker_drops": 5,
			"last_wake": 6, "poll_stats": 7, "self_wakes": 8, "scheduled_time": 9},
		"rs.tokio.console.instrument.Update": {"now": 1, "task_update": 2, "new_metadata": 5},
	}
	kinds := map[string]protoreflect.Kind{
		"rs.tokio.console.common.Field.i64_val":            protoreflect.Sint64Kind,
		"rs.tokio.console.common.Location.line":            protoreflect.Uint32Kind,
		"rs.tokio.console.common.Location.column":          protoreflect.Uint32Kind,
		"rs.tokio.console.tasks.Stats.wakes":               protoreflect.Uint64Kind,
		"rs.tokio.console.tasks.TaskUpdate.dropped_events": protoreflect.Uint64Kind,
		"rs.tokio.console.common.PollStats.polls":          protoreflect.Uint64Kind,
	}
	for msg, fs := range fields {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(msg))
		if err != nil {
			t.Errorf("%s: %v", msg, err)
			continue
		}
		md := d.(protoreflect.MessageDescriptor)
		if md.Fields().Len() != len(fs) {
			t.Errorf("%s has %d fields, want %d", msg, md.Fields().Len(), len(fs))
		}
		for name, num := range fs {
			f := md.Fields().ByName(protoreflect.Name(name))
			if f == nil || int(f.Number()) != num {
				t.Errorf("%s.%s: want field number %d, got %v", msg, name, num, f)
				continue
			}
			if k, ok := kinds[msg+"."+name]; ok && f.Kind() != k {
				t.Errorf("%s.%s: kind %v, want %v", msg, name, f.Kind(), k)
			}
		}
	}
	m := (&TaskUpdate{}).ProtoReflect().Descriptor().Fields().ByName("stats_update")
	if !m.IsMap() || m.MapKey().Kind() != protoreflect.Uint64Kind {
		t.Errorf("stats_update is not map<uint64, Stats>")
	}
	if Instrument_WatchUpdates_FullMethodName != "/rs.tokio.console.instrument.Instrument/WatchUpdates" ||
		Instrument_Pause_FullMethodName != "/rs.tokio.console.instrument.Instrument/Pause" ||
		Instrument_Resume_FullMethodName != "/rs.tokio.console.instrument.Instrument/Resume" {
		t.Errorf("method paths differ from console-api")
	}
	if Task_BLOCKING != 1 || Metadata_EVENT != 1 || Metadata_TRACE != 4 {
		t.Errorf("enum values differ from console-api")
	}
}
