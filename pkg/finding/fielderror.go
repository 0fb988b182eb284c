package finding

import "fmt"

// FieldError is a configuration error in one field of a check's section. The
// config loader prefixes the check's path and finds the line.
type FieldError struct {
	Field  string // dotted, relative to the check's section, e.g. "rules[2].pattern"
	Value  any
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: %s (value %v)", e.Field, e.Reason, e.Value)
}
