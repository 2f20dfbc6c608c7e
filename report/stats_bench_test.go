package report

import (
	"math/rand/v2"
	"testing"
)

// benchCompare times one instance's permutation test against two peers,
// 20,000 observations each (maxObs), over 30 functions.
func benchCompare(b *testing.B, blk func(i int) int32) {
	rng := rand.New(rand.NewPCG(1, 2))
	mk := func() []obs {
		o := make([]obs, maxObs)
		for i := range o {
			o[i] = obs{key: int32(rng.IntN(30)), blk: blk(i), v: 1}
		}
		return o
	}
	in, p1, p2 := mk(), mk(), mk()
	for b.Loop() {
		compare(in, [][]obs{p1, p2}, 30, 1)
	}
}

// Observations drawn one by one (no time slots).
func BenchmarkCompareTicks(b *testing.B) { benchCompare(b, func(int) int32 { return -1 }) }

// Drawn as 40 quarter-second slots (a 10 s eBPF cpu window).
func BenchmarkCompareSlots(b *testing.B) {
	benchCompare(b, func(i int) int32 { return int32(i % 40 * 250) })
}
