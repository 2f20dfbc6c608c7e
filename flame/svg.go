package flame

import (
	"github.com/profcap/profcap/internal/pprofutil"

	"bufio"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"strings"
	"unicode/utf8"
)

// The flamegraph.pl defaults, so the SVG looks like the graphs people know.
const (
	svgWidth       = 1200
	svgFrameHeight = 16
	svgFontSize    = 12
	svgFontWidth   = 0.59 // average glyph width of Verdana relative to its size
	svgXPad        = 10
	svgTitleHeight = svgFontSize * 3
	svgFootHeight  = svgFontSize*2 + 10
	svgMinWidth    = 0.1 // flamegraph.pl's --minwidth default, in pixels
)

// WriteSVG writes a static SVG flame graph in the look of flamegraph.pl.
// Every frame carries a <title> with its name and values, shown as a tooltip
// by browsers. Frames narrower than opt.MinWidth pixels (default 0.1) are
// left out.
func WriteSVG(w io.Writer, t *Tree, opt Options) error {
	if t == nil {
		return fmt.Errorf("no tree")
	}
	minw := opt.MinWidth
	if minw <= 0 {
		minw = svgMinWidth
	}
	si := t.Selected
	total := t.Root.Total[si]
	unit := t.SampleTypes[si].Unit
	var baseTotal int64
	var scale float64
	if t.Diff {
		baseTotal = t.Root.Base[si]
		scale = maxSelfDelta(t, si)
	}
	depth := t.MaxDepth + 1
	height := depth*svgFrameHeight + svgTitleHeight + svgFootHeight
	bw := bufio.NewWriterSize(w, 256<<10)
	fmt.Fprintf(bw, `<?xml version="1.0" standalone="no"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
<svg version="1.1" width="%d" height="%d" viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg">
<defs><linearGradient id="background" y1="0" y2="1" x1="0" x2="0"><stop stop-color="#eeeeee" offset="5%%"/><stop stop-color="#eeeeb0" offset="95%%"/></linearGradient></defs>
<style type="text/css">text { font-family: Verdana, sans-serif; font-size: %dpx; fill: rgb(0,0,0); } .title { font-size: 17px; }</style>
<rect x="0" y="0" width="%d" height="%d" fill="url(#background)"/>
<text class="title" text-anchor="middle" x="%d" y="24">%s</text>
`, svgWidth, height, svgWidth, height, svgFontSize, svgWidth, height, svgWidth/2, xmlEscape(t.Title))
	st := t.SampleTypes[si]
	sub := st.Type + " (" + st.Unit + ")"
	if opt.Reverse {
		sub += ", reversed: roots are leaves"
	}
	if t.Diff {
		sub += ", diff: red grew, blue shrank (share of total)"
	}
	fmt.Fprintf(bw, "<text x=\"%d\" y=\"%d\">%s</text>\n", svgXPad, height-svgFontSize, xmlEscape(sub))
	if total <= 0 {
		fmt.Fprintf(bw, "<text x=\"%d\" y=\"%d\">no samples</text>\n", svgXPad, svgTitleHeight+svgFrameHeight)
		bw.WriteString("</svg>\n")
		return bw.Flush()
	}
	perPx := float64(total) / float64(svgWidth-2*svgXPad)
	var sb strings.Builder
	var draw func(n *Node, x float64, d int)
	draw = func(n *Node, x float64, d int) {
		v := n.Total[si]
		wpx := float64(v) / perPx
		if wpx < minw {
			return
		}
		y := float64(height - svgFootHeight - (d+1)*svgFrameHeight)
		if opt.Icicle {
			y = float64(svgTitleHeight + d*svgFrameHeight)
		}
		var fill string
		sb.Reset()
		sb.WriteString(n.Name)
		sb.WriteString(" (")
		sb.WriteString(pprofutil.FormatValue(v, unit))
		fmt.Fprintf(&sb, ", %.2f%%", 100*float64(v)/float64(total))
		if self := n.Self(si); self > 0 && len(n.Children) > 0 {
			sb.WriteString("; self ")
			sb.WriteString(pprofutil.FormatValue(self, unit))
		}
		sb.WriteString(")")
		if t.Diff {
			bv := n.Base[si]
			fmt.Fprintf(&sb, "\nbase %s (%.2f%%) → new %s (%.2f%%), self share %+.2f pp",
				pprofutil.FormatValue(bv, unit), pct(bv, baseTotal), pprofutil.FormatValue(v, unit), pct(v, total),
				selfDelta(n, si, baseTotal, total)*100)
			fill = diffColor(selfDelta(n, si, baseTotal, total), scale)
		} else {
			fill = langColor(n.Name, n.Lang)
		}
		fmt.Fprintf(bw, "<g><title>%s</title><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" fill=\"%s\" rx=\"2\" ry=\"2\"/>",
			xmlEscape(sb.String()), x, y, wpx, svgFrameHeight-1, fill)
		chars := int(wpx / (svgFontSize * svgFontWidth))
		if chars >= 3 {
			label := n.Name
			if utf8.RuneCountInString(label) > chars {
				label = string([]rune(label)[:chars-2]) + ".."
			}
			fmt.Fprintf(bw, "<text x=\"%.1f\" y=\"%.1f\">%s</text>", x+3, y+svgFrameHeight-5, xmlEscape(label))
		}
		bw.WriteString("</g>\n")
		cx := x
		for _, c := range n.Children {
			draw(c, cx, d+1)
			cx += float64(c.Total[si]) / perPx
		}
	}
	draw(t.Root, svgXPad, 0)
	bw.WriteString("</svg>\n")
	return bw.Flush()
}

func pct(v, total int64) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(v) / float64(total)
}

// selfDelta is the change of a node's self share of the total, base to new.
func selfDelta(n *Node, si int, baseTotal, total int64) float64 {
	var b, c float64
	if baseTotal > 0 {
		b = float64(n.BaseSelf(si)) / float64(baseTotal)
	}
	if total > 0 {
		c = float64(n.Self(si)) / float64(total)
	}
	return c - b
}

// maxSelfDelta is the largest absolute self-share change, at least 1% so
// noise does not look like a regression.
func maxSelfDelta(t *Tree, si int) float64 {
	m := 0.01
	bt, ct := t.Root.Base[si], t.Root.Total[si]
	var walk func(n *Node)
	walk = func(n *Node) {
		m = math.Max(m, math.Abs(selfDelta(n, si, bt, ct)))
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(t.Root)
	return m
}

// diffColor is white for no change, red for growth, blue for shrinkage.
func diffColor(delta, scale float64) string {
	f := math.Min(1, math.Abs(delta)/scale)
	c := int(255 - 200*f)
	if delta > 0 {
		return fmt.Sprintf("rgb(255,%d,%d)", c, c)
	}
	if delta < 0 {
		return fmt.Sprintf("rgb(%d,%d,255)", c, c)
	}
	return "rgb(250,250,250)"
}

// langColor is a stable colour from the frame's language palette, varied by
// a hash of its name the way flamegraph.pl varies its "hot" palette.
func langColor(name string, l Lang) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	s := h.Sum32()
	v1, v2 := float64(s&0xff)/255, float64((s>>8)&0xff)/255
	var r, g, b float64
	switch l {
	case LangGo: // aqua
		r, g, b = 50+60*v1, 170+50*v2, 200+40*v1
	case LangRust: // rust brown-orange
		r, g, b = 200+40*v1, 110+50*v2, 60+30*v1
	case LangKernel: // orange
		r, g, b = 230+25*v1, 140+40*v2, 30+30*v1
	case LangJIT: // green
		r, g, b = 80+60*v1, 190+50*v2, 80+40*v1
	case LangPython: // blue-violet
		r, g, b = 130+50*v1, 140+40*v2, 230+25*v1
	case LangRuby: // pink-red
		r, g, b = 230+25*v1, 80+50*v2, 110+40*v1
	case LangGroup: // grey
		r, g, b = 190+20*v1, 190+20*v1, 190+20*v1
	default: // C/C++ and the rest: flamegraph.pl's hot palette
		r, g, b = 205+50*v1, 230*v2, 55*float64((s>>16)&0xff)/255
		if l == LangOther {
			g = 100 + 130*v2
		}
	}
	return fmt.Sprintf("rgb(%d,%d,%d)", int(r), int(g), int(b))
}

// xmlEscape escapes text for XML content and attributes and replaces
// characters XML 1.0 forbids, so any frame name yields well-formed output.
func xmlEscape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '"':
			b.WriteString("&quot;")
		case '\'':
			b.WriteString("&#39;")
		case '\t', '\n', '\r':
			b.WriteRune(r)
		default:
			if r < 0x20 || r == utf8.RuneError || r >= 0xD800 && r <= 0xDFFF || r == 0xFFFE || r == 0xFFFF {
				b.WriteRune('\uFFFD')
			} else {
				b.WriteRune(r)
			}
		}
	}
	return b.String()
}
