package main

// PLACEHOLDER: owned by the flame work; replaced wholesale.

import (
	"context"
	"errors"
	"io"
)

func runFlame(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("not built yet")
}

func runDiff(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("not built yet")
}
