package catalog

import (
	"fmt"
	"os"
)

// ConnString returns the shard's DSN: DSN as stored, or the value of the environment
// variable DSNEnv read now (it is never stored). It is the one place a shard's DSN is
// resolved; print it only through MaskDSN.
func (s Shard) ConnString() (string, error) {
	if s.DSNEnv == "" {
		if s.DSN == "" {
			return "", fmt.Errorf("shard %s has neither dsn nor dsn_env: fix it with `reshard shard add` or re-init", s.Name)
		}
		return s.DSN, nil
	}
	v := os.Getenv(s.DSNEnv)
	if v == "" {
		return "", fmt.Errorf("shard %s: environment variable %s is empty or unset: export it with the shard's DSN (it is read at connect time and never stored)", s.Name, s.DSNEnv)
	}
	return v, nil
}

// Display is how a shard's connection is shown: its DSN masked, or "$VAR".
func (s Shard) Display() string {
	if s.DSNEnv != "" {
		return "$" + s.DSNEnv
	}
	return MaskDSN(s.DSN)
}
