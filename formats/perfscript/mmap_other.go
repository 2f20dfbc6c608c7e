//go:build !unix

package perfscript

import (
	"errors"
	"os"
)

// mapFile is not available here: the file is read instead.
func mapFile(*os.File, int) ([]byte, func(), error) {
	return nil, nil, errors.ErrUnsupported
}
