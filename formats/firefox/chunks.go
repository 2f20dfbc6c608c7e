package firefox

// chunks is an append-only list of int32 kept in fixed-size blocks, so a
// long column grows without the copies (and the transient 2× peak) of
// append on one slice.
type chunks struct {
	blocks [][]int32
	n      int
}

const chunkSize = 1 << 16

func (c *chunks) add(v int32) {
	if c.n%chunkSize == 0 {
		c.blocks = append(c.blocks, make([]int32, 0, chunkSize))
	}
	b := &c.blocks[len(c.blocks)-1]
	*b = append(*b, v)
	c.n++
}

func (c *chunks) at(i int) int32 { return c.blocks[i/chunkSize][i%chunkSize] }

func (c *chunks) len() int { return c.n }
