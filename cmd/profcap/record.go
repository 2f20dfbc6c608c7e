package main

import (
	"context"
	"errors"
	"io"
)

func runRecord(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("not built yet")
}

func runTargets(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("not built yet")
}
