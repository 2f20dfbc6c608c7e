package symbolize

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func FuzzPerfMapLine(f *testing.F) {
	for _, s := range []string{
		"7f3a8c000000 40 LazyCompile:~handler /app/server.js:12\n",
		"0x7f3a8c000040 0x20 py::compute:/app/main.py\n",
		"3ef414c0a000 2c Builtin:ArgumentsAdaptorTrampoline",
		"zz 10 x", "10 zz x", "10 10", "", " 10 10 x", "ffffffffffffffffff 1 big",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		s, err := ParsePerfMapLine(line)
		if err != nil {
			return
		}
		if s.Name == "" || strings.ContainsAny(s.Name, "\n") {
			t.Fatalf("%q gave %+v", line, s)
		}
		// What parsed prints back to a line that parses the same.
		back, err := ParsePerfMapLine([]byte(strings.ToLower(string(hexOf(s.Start)) + " " + string(hexOf(s.Size)) + " " + s.Name)))
		if err != nil || back.Start != s.Start || back.Size != s.Size || back.Name != strings.ToLower(s.Name) && back.Name != s.Name {
			t.Fatalf("%q → %+v → %+v, %v", line, s, back, err)
		}
		tab := &jitTable{syms: []JITSymbol{s}}
		if s.Size > 0 && tab.lookup(s.Start) == nil {
			t.Fatalf("%+v does not contain its start", s)
		}
	})
}

func hexOf(v uint64) []byte {
	const digits = "0123456789abcdef"
	if v == 0 {
		return []byte("0")
	}
	var b []byte
	for v > 0 {
		b = append([]byte{digits[v&15]}, b...)
		v >>= 4
	}
	return b
}

func FuzzJITDump(f *testing.F) {
	f.Add(jitDump(0x7f0000000000, []jitRec{{0, 0x40, "JS: handler", "/app/x.js", 12}, {0x40, 0x10, "JS: other", "", 0}}))
	f.Add(jitDump(0x1000, nil))
	// A code move record after a load.
	d := jitDump(0x1000, []jitRec{{0, 8, "f", "", 0}})
	mv := make([]byte, 16+40)
	binary.LittleEndian.PutUint32(mv, jitCodeMove)
	binary.LittleEndian.PutUint32(mv[4:], uint32(len(mv)))
	binary.LittleEndian.PutUint64(mv[16+16:], 0x1000)
	binary.LittleEndian.PutUint64(mv[16+24:], 0x2000)
	binary.LittleEndian.PutUint64(mv[16+32:], 8)
	f.Add(append(d, mv...))
	f.Add([]byte("JiTD"))
	f.Fuzz(func(t *testing.T, data []byte) {
		syms, err := ParseJITDump(bytes.NewReader(data))
		if err == nil && len(data) >= 4 && binary.LittleEndian.Uint32(data) != jitMagic && binary.LittleEndian.Uint32(data) != jitMagicSwapped {
			t.Fatalf("no magic, yet no error: %d symbols", len(syms))
		}
		// Every symbol comes from a record, and records are at least 16
		// bytes: the count is bounded by the input.
		if len(syms) > len(data)/16+1 {
			t.Fatalf("%d symbols from %d bytes", len(syms), len(data))
		}
	})
}

func FuzzDebugLink(f *testing.F) {
	f.Add([]byte("libc.so.6.debug\x00\x00\x00\x00\x00\x12\x34\x56\x78"))
	f.Add([]byte("a\x00\x00\x00\x01\x02\x03\x04"))
	f.Add([]byte("../../etc/passwd\x00\x00\x00\x00\x01\x02\x03\x04"))
	f.Add([]byte("\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		name, crc, err := ParseDebugLink(data, binary.LittleEndian)
		if err != nil {
			return
		}
		if name == "" || strings.ContainsAny(name, "/\x00") {
			t.Fatalf("%q gave name %q", data, name)
		}
		off := (len(name) + 4) &^ 3
		if got := binary.LittleEndian.Uint32(data[off:]); got != crc {
			t.Fatalf("crc %x, want %x", crc, got)
		}
	})
}

func FuzzMaps(f *testing.F) {
	f.Add([]byte("55d0c0a01000-55d0c0a05000 r-xp 00001000 fe:00 123 /usr/bin/app\n7f0000000000-7f0000001000 rwxp 00000000 00:00 0 \n"))
	f.Add([]byte("7f0000100000-7f0000200000 r-xp 00010000 fe:00 99 /opt/lib/libx.so (deleted)\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, m := range ParseMaps(data) {
			if m.End < m.Start {
				t.Fatalf("%+v", m)
			}
		}
	})
}

func FuzzKallsymsLine(f *testing.F) {
	f.Add([]byte("ffffffff81000000 T _stext\n"))
	f.Add([]byte("ffffffffc0000000 t mod_fn\t[mymod]\n"))
	f.Add([]byte("0 T"))
	f.Fuzz(func(t *testing.T, line []byte) {
		k, err := ParseKallsymsLine(line)
		if err == nil && (k.Name == "" || strings.ContainsRune(k.Name, '\t')) {
			t.Fatalf("%q gave %+v", line, k)
		}
	})
}

func FuzzDemangle(f *testing.F) {
	for _, s := range []string{
		"_RNvCs1234_7mycrate3foo",
		"_RNCNCNCNvNtCsjrHSEGnQ3l9_3std2rt19lang_start_internal00s_0B9_",
		"_RNvNCNKNvNtNtCsjrHSEGnQ3l9_3std2io5stdio14OUTPUT_CAPTURE0023___RUST_STD_INTERNAL_VAL",
		"_RINvNtCs1234_4core3ptr13drop_in_placeNtNtCsabc_5tokio7runtime7RuntimeEB4_",
		"_RNvYNtNtCs1234_5alloc6string6StringNtNtCs1234_4core3fmt5Write9write_str",
		"_RNvCs1234_7mycrate7u5fa_1a_b5_2c_6d",
		"_ZN3std3sys9backtrace28__rust_begin_short_backtrace17h0123456789abcdefE",
		"_ZN2ns1WIdE3runERSt6vectorIdSaIdEE",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		out := Demangle(name)
		if out == "" && name != "" {
			t.Fatalf("Demangle(%q) is empty", name)
		}
	})
}
