package firefox

import (
	"strconv"

	"github.com/go-json-experiment/json/jsontext"
)

// parseNumber reads the JSON value v (a number, by its first byte) without
// allocating for the integers that make up nearly every column.
func parseNumber(v jsontext.Value) (float64, bool) {
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

// readNumber reads a number or null; kind is the value's kind.
func (p *parser) readNumber() (f float64, kind jsontext.Kind, err error) {
	v, err := p.d.ReadValue()
	if err != nil {
		return 0, 0, err
	}
	kind = v.Kind()
	if kind != '0' {
		return 0, kind, nil
	}
	f, ok := parseNumber(v)
	if !ok {
		return 0, kind, p.errf("bad number %.40s", v)
	}
	return f, kind, nil
}
