package report

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
)

// The statistics behind the outlier view. Each instance is a set of
// observations (a sampling tick, a blocking event, a recorded stack), each
// with a key (the function it is attributed to) and a value (time, bytes).
// An instance is compared with its peers by the total variation distance
// between their value-weighted distributions over keys, and a permutation
// test says how often a random set of as many observations drawn from the
// instance and its peers together is as far from the rest: values are
// heavy-tailed (one long wait can be a tenth of an instance's off-CPU
// time), which a test on counts alone would take for certainty.
//
// Observations of one instance are not independent: a step a worker ran
// puts a burst of on-CPU ticks into one function, so two identical
// workers that drew different mixes of steps in a window look different
// to a test that draws ticks one by one (two healthy demo workers once
// differed at p 0.0005 by generateRows 19% against 7%). Where every
// observation says when in the window it fell (bundle.SlotLabel, else
// bundle.SecondLabel), the random sets are drawn as whole time slots of an
// instance (a block permutation): the bursts inside a slot move together,
// and the test asks whether the instance's slots differ from its peers'.
// Slots shorter than a second (eBPF's quarter seconds) give a window more
// of them: with ten blocks an instance, random sets that happen to take
// most of a sick instance's own blocks are as far as it is, and a p-value
// under differP is out of reach for all but the most different.

// obs is one observation; blk is the time slot of the window it fell in
// (its start in ms), -1 where unknown.
type obs struct {
	key int32 // 16 bytes an observation: the permutation rounds read them all
	blk int32
	v   float64
}

// fit is one instance against its peers.
type fit struct {
	N        int     // the instance's observations
	Blocks   int     // the instance's time slots drawn as blocks; 0: observations drawn one by one
	Cells    int     // keys compared after pooling the rare ones: under 2, too few samples to tell
	Distance float64 // total variation distance to its peers, 0 to 1
	Noise    float64 // the mean distance of random sets of as many observations
	P        float64 // permutation p-value: (1 + permutations at least as far) / (1 + permutations)
	Worst    int     // the key whose share differs most, or -1
	Share    float64 // its share in the instance
	Base     float64 // its share in the peers
}

// Permutation rounds: a first pass, and more for the instances the first
// pass cannot tell from the extreme. With permRounds the smallest p is
// 1/(permRounds+1), under the threshold an instance must pass to differ.
const (
	permFirst  = 199
	permRounds = 1999
	// maxObs bounds the observations of one instance (a uniform
	// subsample of them is used beyond it) to bound the test's time.
	maxObs = 20000
	// minBlocks is the fewest time slots an instance and its peers each
	// need for the block permutation, and minDraws the fewest distinct
	// sets of slots it must be able to draw (so that a p-value under
	// differP can be reached): a shorter window is drawn tick by tick.
	minBlocks = 5
	minDraws  = 20000
)

// peerSets picks each instance's peers: every other instance; with three
// or more instances, not the one farthest from the role's mean (so that
// one sick instance does not pull the baseline its healthy peers are
// measured against). The farthest instance itself is compared with all
// the others.
func peerSets(insts [][]obs, nkeys int) [][]int {
	n := len(insts)
	peers := make([][]int, n)
	far := -1
	if n >= 3 {
		shares := make([][]float64, n)
		mean := make([]float64, nkeys)
		for i, in := range insts {
			shares[i] = sharesOf(in, nkeys)
			for k, s := range shares[i] {
				mean[k] += s / float64(n)
			}
		}
		farD := -1.0
		for i := range insts {
			if d := tvdVec(shares[i], mean); d > farD {
				far, farD = i, d
			}
		}
	}
	for i := range insts {
		for j := range insts {
			if j != i && (j != far || i == far) {
				peers[i] = append(peers[i], j)
			}
		}
	}
	return peers
}

func sharesOf(in []obs, nkeys int) []float64 {
	s := make([]float64, nkeys)
	var t float64
	for _, o := range in {
		s[o.key] += o.v
		t += o.v
	}
	if t > 0 {
		for k := range s {
			s[k] /= t
		}
	}
	return s
}

func tvdVec(a, b []float64) float64 {
	d := 0.0
	for k := range a {
		d += math.Abs(a[k] - b[k])
	}
	return d / 2
}

// compare tests instance in against its peers (their observations
// pooled). seed makes the permutations, and so the report, reproducible.
func compare(in []obs, peers [][]obs, nkeys int, seed uint64) fit {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	in = subsample(in, rng)
	pool := append([]obs(nil), in...)
	bounds := []int{0}
	for _, p := range peers {
		bounds = append(bounds, len(pool))
		pool = append(pool, subsample(p, rng)...)
	}
	m := len(in)
	f := fit{N: m, P: 1, Worst: -1}
	if m == 0 || len(pool) == m {
		return f
	}
	total := make([]float64, nkeys)
	var sumAll float64
	for _, o := range pool {
		total[o.key] += o.v
		sumAll += o.v
	}
	// Keys too rare to tell apart at this sample size (under five of the
	// instance's observations expected) are pooled into one: a function
	// sampled once in one instance and never in another is not a
	// difference.
	other := -1
	remap := make([]int32, nkeys)
	for k := range remap {
		remap[k] = int32(k)
		if sumAll > 0 && total[k]/sumAll*float64(m) < 5 {
			if other < 0 {
				other = k
			}
			remap[k] = int32(other)
		}
	}
	if other >= 0 {
		for i := range pool {
			pool[i].key = remap[pool[i].key]
		}
		in = pool[:m]
		clear(total)
		for _, o := range pool {
			total[o.key] += o.v
		}
	}
	part := make([]float64, nkeys)
	dist := func(part []float64, sumPart float64) float64 {
		rest := sumAll - sumPart
		if sumPart <= 0 || rest <= 0 {
			return 1
		}
		d := 0.0
		for k := range part {
			d += math.Abs(part[k]/sumPart - (total[k]-part[k])/rest)
		}
		return d / 2
	}
	for _, v := range total {
		if v > 0 {
			f.Cells++
		}
	}
	var sumIn float64
	for _, o := range in {
		part[o.key] += o.v
		sumIn += o.v
	}
	f.Distance = dist(part, sumIn)
	// The function that differs most: the one whose share grew most (what
	// this instance does that its peers do not), else the one that shrank
	// most.
	worst := math.Inf(-1)
	for k := range part {
		if k == other {
			continue
		}
		s := part[k] / sumIn
		b := (total[k] - part[k]) / (sumAll - sumIn)
		d := s - b
		if d < 0 {
			d = -d - 2 // below every growth
		}
		if d > worst && (s > 0 || b > 0) {
			worst, f.Worst, f.Share, f.Base = d, k, s, b
		}
	}
	// Draw m of the pool without replacement (a partial Fisher–Yates
	// shuffle of indices), as many times as the rounds ask: m
	// observations, or, where they say their time slot, the instance's
	// number of slots (each an instance's observations in one slot).
	blocks, nIn := blocksOf(pool, bounds)
	n, draw := len(pool), m
	if blocks != nil {
		n, draw, f.Blocks = len(blocks), nIn, nIn
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	var ge, rounds int
	var nullSum float64
	run := func(until int) {
		for ; rounds < until; rounds++ {
			clear(part)
			var s float64
			for i := 0; i < draw; i++ {
				j := i + rng.IntN(len(idx)-i)
				idx[i], idx[j] = idx[j], idx[i]
				if blocks == nil {
					o := pool[idx[i]]
					part[o.key] += o.v
					s += o.v
					continue
				}
				for _, o := range blocks[idx[i]] {
					part[o.key] += o.v
					s += o.v
				}
			}
			d := dist(part, s)
			nullSum += d
			if d >= f.Distance-1e-12 {
				ge++
			}
		}
	}
	run(permFirst)
	if ge <= 1 {
		run(permRounds) // near the extreme: tell it more finely
	}
	f.Noise = nullSum / float64(rounds)
	f.P = float64(1+ge) / float64(1+rounds)
	return f
}

// blocksOf groups the pooled observations by instance and time slot, the
// tested instance's slots first (instance i's observations start at
// pool[bounds[i]]; instance 0 is the tested one), each slot's values
// summed by key, and says how many are the tested instance's; nil where
// an observation has no slot, or there are too few slots to draw from
// (minBlocks, minDraws).
func blocksOf(pool []obs, bounds []int) ([][]obs, int) {
	var out [][]obs
	mine := 0
	for i, from := range bounds {
		to := len(pool)
		if i+1 < len(bounds) {
			to = bounds[i+1]
		}
		at := map[[2]int32]int{} // slot, key → index into out[slot's block]
		block := map[int32]int{} // slot → index into out
		n := len(out)
		for _, o := range pool[from:to] {
			if o.blk < 0 {
				return nil, 0
			}
			b, ok := block[o.blk]
			if !ok {
				b = len(out)
				block[o.blk] = b
				out = append(out, nil)
			}
			if k, ok := at[[2]int32{o.blk, o.key}]; ok {
				out[b][k].v += o.v
				continue
			}
			at[[2]int32{o.blk, o.key}] = len(out[b])
			out[b] = append(out[b], o)
		}
		if i == 0 {
			mine = len(out) - n
		}
	}
	if mine < minBlocks || len(out)-mine < minBlocks || lchoose(len(out), mine) < math.Log(minDraws) {
		return nil, 0
	}
	return out, mine
}

// lchoose is ln(n choose k).
func lchoose(n, k int) float64 {
	a, _ := math.Lgamma(float64(n + 1))
	b, _ := math.Lgamma(float64(k + 1))
	c, _ := math.Lgamma(float64(n - k + 1))
	return a - b - c
}

func subsample(in []obs, rng *rand.Rand) []obs {
	if len(in) <= maxObs {
		return in
	}
	out := make([]obs, maxObs)
	for i, j := range rng.Perm(len(in))[:maxObs] {
		out[i] = in[j]
	}
	return out
}

func seedOf(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum64()
}
