package report

import (
	"math"
	"sort"
)

// The statistics behind the outlier view: how far one instance's
// distribution over functions is from its role's, how far it would be from
// sampling alone, and a chi-square goodness-of-fit test of its counts.

// chiSquareSF is P(X ≥ x) for X chi-square distributed with df degrees of
// freedom: the regularized upper incomplete gamma function Q(df/2, x/2).
func chiSquareSF(x float64, df int) float64 {
	if df <= 0 {
		return 1
	}
	if x <= 0 {
		return 1
	}
	if math.IsInf(x, 1) {
		return 0
	}
	return gammaQ(float64(df)/2, x/2)
}

// gammaQ is the regularized upper incomplete gamma function (series for
// x < a+1, Lentz's continued fraction otherwise; Numerical Recipes §6.2).
func gammaQ(a, x float64) float64 {
	lg, _ := math.Lgamma(a)
	if x < a+1 {
		sum, del, ap := 1/a, 1/a, a
		for n := 0; n < 1000; n++ {
			ap++
			del *= x / ap
			sum += del
			if math.Abs(del) < math.Abs(sum)*1e-15 {
				break
			}
		}
		p := sum * math.Exp(-x+a*math.Log(x)-lg)
		return math.Max(0, 1-p)
	}
	const tiny = 1e-300
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	h := d
	for i := 1; i < 1000; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < 1e-15 {
			break
		}
	}
	return math.Min(1, math.Exp(-x+a*math.Log(x)-lg)*h)
}

// fit is one instance against its role's distribution.
type fit struct {
	N        float64 // the instance's counts
	Distance float64 // total variation distance, 0 to 1
	Noise    float64 // expected distance from sampling alone
	P        float64 // chi-square goodness of fit
	Worst    string  // the key whose share differs most
	Share    float64 // its share in the instance
	Base     float64 // its share in the role
}

// otherCell pools the keys too rare to test on their own.
const otherCell = "(other functions)"

// compareInstances compares each instance's counts by key with its role's
// distribution. The role's distribution is the mean of the instances'
// shares; with three or more instances, without the instance farthest from
// that mean, so that one sick instance does not pull the baseline its
// healthy peers are measured against. Keys whose expected count in an
// instance (by the role's pooled share) is under 5 are pooled into one
// cell, as the chi-square approximation needs; the distance is measured on
// the same cells, so that rare functions sampled once or twice do not
// count as a difference.
func compareInstances(insts []map[string]float64) []fit {
	shares := make([]map[string]float64, len(insts))
	ns := make([]float64, len(insts))
	pooled := map[string]float64{}
	var total float64
	for i, c := range insts {
		shares[i] = map[string]float64{}
		for _, v := range c {
			ns[i] += v
		}
		for k, v := range c {
			pooled[k] += v
			total += v
			if ns[i] > 0 {
				shares[i][k] = v / ns[i]
			}
		}
	}
	for k := range pooled {
		pooled[k] /= total
	}
	base := meanShares(shares, -1)
	if len(insts) >= 3 {
		far, farD := -1, -1.0
		for i := range shares {
			if d := tvd(shares[i], base); d > farD {
				far, farD = i, d
			}
		}
		base = meanShares(shares, far)
	}
	out := make([]fit, len(insts))
	for i := range insts {
		cells, baseCells := map[string]float64{}, map[string]float64{}
		for k := range pooled {
			cell := k
			if pooled[k]*ns[i] < 5 {
				cell = otherCell
			}
			cells[cell] += insts[i][k]
			baseCells[cell] += base[k]
		}
		out[i] = goodnessOfFit(cells, baseCells)
	}
	return out
}

func meanShares(shares []map[string]float64, skip int) map[string]float64 {
	out := map[string]float64{}
	n := 0
	for i, s := range shares {
		if i == skip || len(s) == 0 {
			continue
		}
		n++
		for k, v := range s {
			out[k] += v
		}
	}
	for k := range out {
		out[k] /= float64(n)
	}
	return out
}

func tvd(a, b map[string]float64) float64 {
	d := 0.0
	for k, v := range a {
		d += math.Abs(v - b[k])
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			d += v
		}
	}
	return d / 2
}

// goodnessOfFit compares counts by cell with the shares base (summing to 1).
func goodnessOfFit(counts map[string]float64, base map[string]float64) fit {
	var n float64
	for _, c := range counts {
		n += c
	}
	f := fit{N: n, P: 1}
	if n <= 0 {
		return f
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	for k := range base {
		if _, ok := counts[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	worst := -1.0
	var chi float64
	cells := 0
	for _, k := range keys {
		s, b := counts[k]/n, base[k]
		d := math.Abs(s - b)
		f.Distance += d / 2
		f.Noise += math.Sqrt(2*b*(1-b)/(math.Pi*n)) / 2
		if d > worst && k != otherCell {
			worst, f.Worst, f.Share, f.Base = d, k, s, b
		}
		// An expectation of (nearly) zero where the instance has counts
		// is a difference in itself; a floor of one count keeps the
		// statistic finite and conservative.
		e := math.Max(n*b, 1)
		chi += (counts[k] - e) * (counts[k] - e) / e
		cells++
	}
	f.P = chiSquareSF(chi, cells-1)
	return f
}
