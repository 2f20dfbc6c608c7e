// Package jsonutil holds what the streaming JSON importers (firefox,
// speedscope) share.
package jsonutil

import (
	"strconv"

	"github.com/go-json-experiment/json/jsontext"
)

// ParseNumber reads the JSON value v (a number, by its first byte) without
// allocating for the integers that make up nearly every column.
func ParseNumber(v jsontext.Value) (float64, bool) {
	b := []byte(v)
	neg := false
	if len(b) > 0 && b[0] == '-' {
		neg, b = true, b[1:]
	}
	if len(b) > 0 && len(b) <= 15 {
		var n uint64
		i := 0
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			n = n*10 + uint64(b[i]-'0')
		}
		if i == len(b) {
			if neg {
				return -float64(n), true
			}
			return float64(n), true
		}
	}
	f, err := strconv.ParseFloat(string(v), 64)
	return f, err == nil
}

// Int32s is an append-only list of int32 kept in fixed-size blocks, so a
// long column grows without the copies (and the transient 2× peak) of
// append on one slice.
type Int32s struct {
	blocks [][]int32
	n      int
}

const chunkSize = 1 << 16

// Add appends v.
func (c *Int32s) Add(v int32) {
	if c.n%chunkSize == 0 {
		c.blocks = append(c.blocks, make([]int32, 0, chunkSize))
	}
	b := &c.blocks[len(c.blocks)-1]
	*b = append(*b, v)
	c.n++
}

// At returns the i-th value.
func (c *Int32s) At(i int) int32 { return c.blocks[i/chunkSize][i%chunkSize] }

// Len is the number of values.
func (c *Int32s) Len() int { return c.n }
