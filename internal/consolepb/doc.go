// Package consolepb holds Go code generated from profcap's subset of the
// tokio-console wire protocol (console-api): the proto packages
// rs.tokio.console.common, rs.tokio.console.tasks and
// rs.tokio.console.instrument, in proto/rs/tokio/console. The generated
// files are committed so a build needs no protoc.
//
// Regenerate with protoc, protoc-gen-go v1.36.12 and protoc-gen-go-grpc v1.6.2:
//
//	go generate ./internal/consolepb
package consolepb

//go:generate protoc -I ../../proto --go_out=. --go_opt=module=github.com/profcap/profcap/internal/consolepb --go-grpc_out=. --go-grpc_opt=module=github.com/profcap/profcap/internal/consolepb rs/tokio/console/common.proto rs/tokio/console/tasks.proto rs/tokio/console/instrument.proto
