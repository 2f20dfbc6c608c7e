package flame

import "testing"

func TestShortName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"github.com/profcap/profcap/internal/demo.(*worker).runStep", "demo.(*worker).runStep"},
		{"github.com/profcap/profcap/internal/demo.(*worker).handleStep-fm", "demo.(*worker).handleStep-fm"},
		{"crypto/internal/fips140/sha256.blockSHANI.abi0", "sha256.blockSHANI.abi0"},
		{"encoding/json.structEncoder.encode", "json.structEncoder.encode"},
		{"runtime.gopark", "runtime.gopark"},
		{"main.main", "main.main"},
		{"gopkg.in/yaml.v3.(*parser).parse", "yaml.v3.(*parser).parse"},
		{"github.com/jackc/pgx/v5.(*Conn).Query", "pgx.(*Conn).Query"},
		{`slices.partitionCmpFunc[go.shape.struct { ID int64 "json:\"id\""; Note string }]`, "slices.partitionCmpFunc[…]"},
		{"encoding/json.appendString[go.shape.string]", "json.appendString[…]"},
		{"tokio::runtime::task::harness::Harness<T,S>::poll::h0123456789abcdef", "tokio::runtime::task::harness::Harness::poll"},
		{"tokio::runtime::task::harness::poll", "tokio::runtime::task::harness::poll"},
		{"<alloc::vec::Vec<T> as core::ops::drop::Drop>::drop", "<Vec as Drop>::drop"},
		{"<F as core::future::future::Future>::poll", "<F as Future>::poll"},
		{"std::vector<int>::push_back(int const&)", "std::vector<int>::push_back(int const&)"},
		{"(anonymous namespace)::Foo::bar", "Foo::bar"},
		{"handle (/app/server.py:11)", "handle (/app/server.py:11)"},
		{"block in run - /app/lib/worker.rb:22", "block in run - /app/lib/worker.rb:22"},
		{"libfoo.so.1+0x1234", "libfoo.so.1+0x1234"},
		{"/usr/lib/libc.so.6+0x1234", "/usr/lib/libc.so.6+0x1234"},
		{"[unknown]", "[unknown]"},
		{"[preempted: runnable, waiting for a CPU]", "[preempted: runnable, waiting for a CPU]"},
		{"__schedule", "__schedule"},
		{"org.example.Server.handle(Server.java:10)", "Server.handle"},
		{"", ""},
	} {
		if got := ShortName(tc.in); got != tc.want {
			t.Errorf("ShortName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestClassifyGoShapes(t *testing.T) {
	for _, name := range []string{
		"encoding/json.structEncoder.encode",                   // value receiver
		"encoding/json.structEncoder.encode-fm",                // method value
		"github.com/x/y.(*T).Serve-fm",                         // pointer method value
		"crypto/internal/fips140/sha256.blockSHANI.abi0",       // assembly
		"internal/runtime/syscall/linux.Syscall6",              //
		"encoding/json.appendString[go.shape.string]",          // generic
		"net/http.(*Server).Serve.gowrap3",                     //
		"github.com/profcap/profcap/internal/demo.janitor",     //
		"golang.org/x/net/http2.(*Framer).ReadFrameHeader",     //
		"github.com/x/y.Map[go.shape.int,go.shape.string].Get", // generic type's method
	} {
		if got := classify(name, "", ""); got != LangGo {
			t.Errorf("classify(%q) = %v, want go", name, got)
		}
	}
	for _, tc := range []struct {
		name string
		want Lang
	}{
		{"finish_task_switch.isra.0", LangC},
		{"memcpy_avx.part.0", LangC},
		{"__schedule", LangC},
	} {
		if got := classify(tc.name, "", ""); got != tc.want {
			t.Errorf("classify(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
