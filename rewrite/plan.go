package rewrite

// This file is the contract between rewrite and proxy. rewrite is pure: SQL
// and compiled Rules in, *Plan out; no I/O, no keys. The proxy applies a
// Plan's actions with the keyring.

// Op is what the proxy does to one value before it reaches PostgreSQL.
type Op uint8

const (
	OpNone      Op = iota // pass the value unchanged
	OpEncrypt             // value -> Fernet token (text); NULL stays NULL
	OpHash                // value -> 64-hex blind index under the *current* hash key; NULL stays NULL
	OpHashAll             // value -> text array literal of blind indexes under the current and every fallback hash key ('{h0,h1}'); used for lookups while fallback_hash_keys is set
	OpHashArray           // value is an array (text or binary format, element text); -> text array of blind indexes of every element (under every hash key)
)

// Action is one Op with what it needs.
type Action struct {
	Op     Op
	Domain string // hash domain for OpHash*, e.g. "public.users.email"
	// Column is "table.column" of the encrypted column the value is aimed
	// at, for error messages (never the value).
	Column string
}

// Source names where a value comes from.
type Source struct {
	// Param is the 0-based index of the client's Bind parameter, or -1.
	Param int
	// Literal is the 0-based index into the literals the normalizer
	// extracted from the statement text (see Normalize), or -1.
	Literal int
}

// Slot is a place in Plan.SQL where a literal is rendered at run time.
type Slot struct {
	// Offset is the byte offset in Plan.SQL where the rendered literal is
	// inserted (Plan.SQL holds nothing at that point).
	Offset int
	// Literal is the index of the normalizer's literal rendered here.
	Literal int
	Action  Action
}

// HiddenParam is a parameter pgveil adds. Hidden parameters are numbered
// after the client's: $(NumClientParams+1) ... in order.
type HiddenParam struct {
	From   int // 0-based client parameter index the value is computed from
	Action Action
}

// ResultColumn marks an output column as encrypted when the SQL itself says
// so (UNION, VALUES, COPY (query) TO) and RowDescription names no origin.
type ResultColumn struct {
	Index  int    // 0-based output position
	Column string // "table.column"
}

// Kind of plan.
type Kind uint8

const (
	KindPassthrough Kind = iota // forward the original bytes unchanged
	KindRewrite                 // send Render()'s SQL with transformed parameters
	KindRefuse                  // answer with Refusal; send nothing
)

// Plan is the analysis of one statement text (which may hold several
// statements in the simple protocol). Plans are immutable and shared between
// sessions through the Cache.
type Plan struct {
	Kind    Kind
	Refusal *RefusalError // KindRefuse

	// SQL is the statement to send, with literal slots cut out (see
	// Slots). Client parameters keep their numbers; hidden parameters follow.
	SQL   string
	Slots []Slot // ascending Offset

	// ClientParams holds the action for each client parameter (by index);
	// shorter than the client's parameter count means OpNone for the rest.
	// A transformed client parameter is replaced in Bind in place.
	ClientParams []Action
	Hidden       []HiddenParam
	// NumClientParams is the highest $n the client's SQL uses.
	NumClientParams int

	// Results: encrypted output columns known from the SQL, for the last
	// statement that returns rows; nil when RowDescription origins suffice.
	Results []ResultColumn

	// Copy is set for COPY ... FROM STDIN / TO STDOUT on a configured table.
	Copy *CopyPlan

	// Tables lists the configured tables ("schema.table") the text touches.
	Tables []string
	// DDL is true when the text changes the schema (CREATE/ALTER/DROP/...);
	// the proxy refreshes its catalog of configured tables afterwards.
	DDL bool
	// SearchPathChange is true when the text may change which table a name
	// without a schema resolves to: SET/RESET search_path, set_config(),
	// SET ROLE or SESSION AUTHORIZATION ("$user" in the path), RESET ALL,
	// DISCARD ALL. The proxy learns the session's SearchPath anew before
	// the next statement.
	SearchPathChange bool
	// Unqualified is true when the text names a configured table without
	// its schema: the plan holds only for the SearchPath it was made with.
	Unqualified bool
	// UnqualifiedAfterDDL and UnqualifiedAfterPathChange: a statement of
	// the text names a configured table without its schema after another
	// of the text that is DDL, or that may change the search path. Both
	// were planned before either ran, with what the name found before.
	UnqualifiedAfterDDL, UnqualifiedAfterPathChange bool
}

// CopyPlan describes a COPY on a configured table.
type CopyPlan struct {
	In     bool // FROM STDIN (else TO STDOUT)
	Format CopyFormat
	// Delimiter, Null, Quote, Escape as the COPY options say (defaults per format).
	Delimiter byte
	Null      string
	Quote     byte
	Escape    byte
	Header    bool
	// Columns is the column list of the COPY as sent upstream (after
	// rewrite). For In, encrypted columns are at EncryptAt and their blind
	// index values are appended at the end of every row in the order of
	// HashFrom (the rewritten SQL lists those blind-index columns last).
	Columns   []string
	EncryptAt []CopyField // positions in the client's rows to encrypt (In) or decrypt (Out)
	HashFrom  []CopyField // In: for each appended blind-index column, the client field it hashes

	// Table ("schema.table") and AllColumns: COPY t TO STDOUT without a
	// column list; the proxy finds the encrypted positions in its catalog.
	Table      string
	AllColumns bool

	// The CSV options FORCE_NOT_NULL and FORCE_NULL (In) and FORCE_QUOTE
	// (Out), which change how an encrypted field is read or written.
	// PostgreSQL checks that each is allowed and names listed columns.
	ForceNotNull, ForceNull, ForceQuote CopyColumns
}

// CopyColumns is the argument of a FORCE_* option of COPY: the columns it
// names, or every column of the COPY (the * form).
type CopyColumns struct {
	All   bool
	Names []string
}

// Has reports whether the option applies to the column named name.
func (c CopyColumns) Has(name string) bool {
	if c.All {
		return true
	}
	for _, n := range c.Names {
		if n == name {
			return true
		}
	}
	return false
}

// CopyField is one field position of a COPY row.
type CopyField struct {
	Index  int
	Action Action // OpEncrypt / OpHash for In; OpEncrypt means "decrypt" for Out
}

// CopyFormat of a COPY.
type CopyFormat uint8

const (
	CopyText CopyFormat = iota
	CopyCSV
	CopyBinary
)
