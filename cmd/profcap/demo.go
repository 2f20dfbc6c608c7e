package main

// PLACEHOLDER: owned by the demo work; replaced wholesale.

import (
	"context"
	"errors"
	"io"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("not built yet")
}

func runDemoService(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("not built yet")
}
