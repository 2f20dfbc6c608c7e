package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/profcap/profcap/bundle"
	"github.com/profcap/profcap/internal/testsvc"
)

// testCA makes a CA and certificates it signs, written as PEM files in dir.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "profcap test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, dir: dir}
	ca.write(t, "ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(ca.dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// issue returns a certificate and key for a server (with IP SANs) or a
// client, as a tls.Certificate and as PEM files NAME.pem, NAME-key.pem.
func (ca *testCA) issue(t *testing.T, name string, server bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	ca.write(t, name+".pem", "CERTIFICATE", der)
	ca.write(t, name+"-key.pem", "EC PRIVATE KEY", kder)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// A target behind HTTPS that requires a client certificate (mTLS) is
// captured with the CA and client certificate named in the targets file,
// and refused without them.
func TestRecordMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	serverCert := ca.issue(t, "server", true)
	ca.issue(t, "client", false)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)

	srv := httptest.NewUnstartedServer(testsvc.Handler(testsvc.Normal, false))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes below are expected
	srv.StartTLS()
	defer srv.Close()

	cfg := filepath.Join(dir, "profcap.yaml")
	os.WriteFile(cfg, []byte(`
targets:
  - name: mtls
    pprof: `+srv.URL+`/debug/pprof
    tls: {ca_file: ca.pem, cert_file: client.pem, key_file: client-key.pem}
  - name: no-client-cert
    pprof: `+srv.URL+`/debug/pprof
    tls: {ca_file: ca.pem}
  - name: unknown-ca
    pprof: `+srv.URL+`/debug/pprof
`), 0o644)
	out := filepath.Join(dir, "b")
	_, stderr, code := runCLI(t, "record", "--config", cfg, "--all", "--duration", "1s", "--profiles", "heap", "--out", out)
	if code != 3 {
		t.Errorf("exit %d, want 3 (one target of three captured)\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "mtls") {
		t.Errorf("stderr:\n%s", stderr)
	}
	m := mustManifest(t, out)
	want := map[string]bundle.Status{"mtls": "ok", "no-client-cert": "failed", "unknown-ca": "failed"}
	for _, tg := range m.Targets {
		if tg.Status != want[tg.Name] {
			t.Errorf("%s: %s (%v), want %s", tg.Name, tg.Status, tg.Profiles[0].Error, want[tg.Name])
		}
	}
	for _, tg := range m.Targets {
		if tg.Name == "unknown-ca" && !strings.Contains(tg.Profiles[0].Error, "certificate") {
			t.Errorf("unknown-ca error %q does not name the certificate problem", tg.Profiles[0].Error)
		}
	}
}
