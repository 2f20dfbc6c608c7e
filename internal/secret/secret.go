// Package secret reads credentials from the places profcap takes them: a
// file or an environment variable. Every command that needs a credential
// reads it here, so the rules (which source wins, what is trimmed, when a
// missing one is an error) are the same for targets and for Pyroscope.
package secret

import (
	"fmt"
	"os"
	"strings"
)

// Read returns the secret in file, or else in the environment variable
// env. A named file wins over a variable (it was named on purpose; the
// variable may be left over in the shell). Surrounding white space (the
// trailing newline of a file) is trimmed. A file that cannot be read or is
// empty is an error; an unset or empty variable is an error only when
// required, otherwise it gives "". what names the secret in errors
// ("bearer token"); the value itself never appears in one.
func Read(what, env, file string, required bool) (string, error) {
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %v", what, err)
		}
		v := strings.TrimSpace(string(data))
		if v == "" {
			return "", fmt.Errorf("%s: %s is empty", what, file)
		}
		return v, nil
	}
	if env == "" {
		return "", nil
	}
	v := strings.TrimSpace(os.Getenv(env))
	if v == "" && required {
		return "", fmt.Errorf("%s: environment variable %s is not set", what, env)
	}
	return v, nil
}
