package demo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// fakeDB stands in for the reference cluster's database: every query holds
// one of a few pooled connections for a few milliseconds of "network and
// disk". It costs no CPU, so it is what off-CPU views (fgprof, the block
// profile) show and on-CPU profiles do not: goroutines waiting for a free
// connection (a channel receive) and for the reply (a timer).
type fakeDB struct {
	pool    chan *dbConn
	latency time.Duration // mean query latency
	// flaky makes every query reconnect first (a sick service's database:
	// its connections keep dropping), which costs twice the latency.
	flaky bool
}

type dbConn struct{ id int }

// dbRow is one row a query returns.
type dbRow struct {
	ID      int64   `json:"id"`
	Account string  `json:"account"`
	Region  string  `json:"region"`
	Amount  float64 `json:"amount"`
	Note    string  `json:"note"`
}

func newFakeDB(conns int, latency time.Duration) *fakeDB {
	db := &fakeDB{pool: make(chan *dbConn, conns), latency: latency}
	for i := range conns {
		db.pool <- &dbConn{id: i + 1}
	}
	return db
}

// query runs one fake query returning n rows of table.
func (db *fakeDB) query(ctx context.Context, table string, n int) ([]dbRow, error) {
	conn, err := db.acquireConn(ctx)
	if err != nil {
		return nil, err
	}
	defer db.releaseConn(conn)
	if db.flaky {
		if err := db.reconnect(ctx, conn); err != nil {
			return nil, err
		}
	}
	if err := db.waitForReply(ctx, conn); err != nil {
		return nil, err
	}
	return decodeRows(table, n), nil
}

// acquireConn blocks until a pooled connection is free.
func (db *fakeDB) acquireConn(ctx context.Context) (*dbConn, error) {
	select {
	case c := <-db.pool:
		return c, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a database connection: %w", ctx.Err())
	}
}

func (db *fakeDB) releaseConn(c *dbConn) { db.pool <- c }

// waitForReply is the slow part of a query on connection c: it blocks, off
// CPU, for between half and one and a half times the mean latency.
func (db *fakeDB) waitForReply(ctx context.Context, c *dbConn) error {
	mean := db.latency
	d := mean/2 + rand.N(mean)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("database query on connection %d: %w", c.id, ctx.Err())
	}
}

// reconnect re-establishes a dropped connection: a handshake of about
// twice the query latency, off CPU.
func (db *fakeDB) reconnect(ctx context.Context, c *dbConn) error {
	t := time.NewTimer(db.latency + rand.N(2*db.latency))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("reconnecting database connection %d: %w", c.id, ctx.Err())
	}
}

var regions = []string{"eu-west", "eu-central", "us-east", "us-west", "ap-south"}

// decodeRows builds the rows of a reply: small allocations, as a driver
// decoding a result set makes them.
func decodeRows(table string, n int) []dbRow {
	rows := make([]dbRow, n)
	for i := range rows {
		id := rand.Int64N(1_000_000)
		rows[i] = dbRow{
			ID:      id,
			Account: fmt.Sprintf("%s-acct-%06d", table, id),
			Region:  regions[id%int64(len(regions))],
			Amount:  float64(id%100_000) / 100,
			Note:    fmt.Sprintf("row %d of %d from %s", i+1, n, table),
		}
	}
	return rows
}
