package perfscript

import (
	"bytes"
	"io"
	"testing"
)

// benchInput is the conformance corpus repeated to about 8 MB.
func benchInput(b *testing.B) []byte {
	var one []byte
	for _, name := range []string{"perf-iperf-stacks-pidtid-01.txt", "perf-numa-stacks-01.txt", "perf-java-stacks-01.txt"} {
		one = append(one, readFixture(b, "conformance/"+name)...)
	}
	return bytes.Repeat(one, 8<<20/len(one)+1)
}

func BenchmarkCollapse(b *testing.B) {
	in := benchInput(b)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Collapse(bytes.NewReader(in), io.Discard, CollapseOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	in := benchInput(b)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(bytes.NewReader(in), Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseOffCPU(b *testing.B) {
	in := bytes.Repeat(readFixture(b, "fixtures/perf-script-sched-switch-systemwide-filtered.txt"), 50)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseOffCPU(bytes.NewReader(in), OffCPUOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
