package firefox

import (
	"github.com/go-json-experiment/json/jsontext"

	"github.com/profcap/profcap/formats/internal/jsonutil"
)

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
	f, ok := jsonutil.ParseNumber(v)
	if !ok {
		return 0, kind, p.errf("bad number %.40s", v)
	}
	return f, kind, nil
}
