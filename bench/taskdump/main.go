//go:build linux

// Command taskdump measures what task dumps cost the reference Tokio
// service (rust/, refsvc): its request latency (GET /health at a steady
// open-loop rate), its own step latency (dispatch to commit, from
// /metrics) and its CPU use, in alternating rounds without dumps and with
// dumps at several rates, plus each dump's own latency and size.
//
//	go run ./bench/taskdump -rounds 10 -round 3s -rates 0,1,2,5,10 -o /tmp/taskdump.md
//	go test -run '^$' -bench TaskDump ./bench/taskdump
//
// The service runs on loopback and is killed at the end; every round is
// bounded in time.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "", "refsvc binary (default $PROFCAP_CACHE/rust/bin/refsvc-VARIANT)")
	flag.StringVar(&o.variant, "variant", "release", "refsvc build: release or profiling")
	flag.IntVar(&o.rounds, "rounds", 10, "alternating rounds per rate")
	flag.DurationVar(&o.round, "round", 3*time.Second, "length of one round")
	rates := flag.String("rates", "0,1,2,5,10", "dump rates to compare, per second (0: no dumps)")
	flag.DurationVar(&o.loadEvery, "load-every", 10*time.Millisecond, "one GET /health every this long (open loop)")
	flag.IntVar(&o.backlog, "spawn-backlog", 0, "refsvc --spawn-backlog: 0 turns off its periodic 200 ms hogs, which otherwise dominate the latency tail")
	out := flag.String("o", "", "also write the result table (Markdown) to this file")
	flag.Parse()
	for _, s := range strings.Split(*rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || r < 0 {
			fmt.Fprintf(os.Stderr, "taskdump: bad rate %q\n", s)
			os.Exit(2)
		}
		o.rates = append(o.rates, r)
	}
	rep, err := run(o, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "taskdump:", err)
		os.Exit(1)
	}
	md := rep.markdown()
	fmt.Print(md)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "taskdump:", err)
			os.Exit(1)
		}
	}
}
