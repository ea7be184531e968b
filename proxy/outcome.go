package proxy

import (
	"errors"

	"github.com/pgveil/pgveil/keyring"
	"github.com/pgveil/pgveil/rewrite"
)

// cacheLabel maps how the rewriter found a plan to its metric label.
func cacheLabel(r rewrite.CacheResult) string {
	switch r {
	case rewrite.CacheHit:
		return CacheHit
	case rewrite.CacheMiss:
		return CacheMiss
	default:
		return CacheSkip
	}
}

// rejectionReason maps a refusal to its metric label (a closed set).
func rejectionReason(err error) string {
	var r *rewrite.RefusalError
	var size *keyring.SizeError
	var input *keyring.InvalidInputError
	var tooLarge *MessageTooLargeError
	switch {
	case errors.As(err, &r) && r.Reason == rewrite.ReasonParseError:
		return ReasonParse
	case errors.As(err, &r) && r.Reason != "":
		return r.Reason
	case errors.As(err, &size), errors.As(err, &tooLarge):
		return ReasonTooLarge
	case errors.As(err, &input):
		return ReasonInvalidInput
	default:
		var s sqlStater
		if errors.As(err, &s) {
			switch s.SQLState() {
			case codeProgramLimit:
				return ReasonTooLarge
			case codeUntranslatable:
				return ReasonInvalidInput
			case "42601":
				return ReasonParse
			}
		}
		return ReasonUnsupported
	}
}
