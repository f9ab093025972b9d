/*-------------------------------------------------------------------------
 * shoal.h
 *		Declarations shared by the files of the shoal extension.
 *
 * The extension is a thin C layer: it embeds CPython, hosts foreign-data
 * wrappers written in Python, and does in C only what must be done in C
 * (FDW callbacks, binary tuple decoding, deparsing with ruleutils).
 *-------------------------------------------------------------------------
 */
#ifndef SHOAL_H
#define SHOAL_H

/* Python.h must come first: it defines feature macros the C library honours. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "postgres.h"

#include "access/tupdesc.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "nodes/execnodes.h"
#include "nodes/pathnodes.h"
#include "nodes/plannodes.h"
#include "nodes/primnodes.h"
#include "utils/memutils.h"
#include "utils/relcache.h"

/* shoal.c: configuration */
extern char *shoal_python_path;
extern char *shoal_python_executable;
extern char *shoal_node_name;
extern int	shoal_mux_port;
extern int	shoal_workers;
extern int	shoal_deadlock_timeout;
extern bool shoal_two_phase_commit;
extern char *shoal_crash_point;
extern char *shoal_database;
extern char *shoal_cluster_secret;
extern int	shoal_metrics_port;
extern char *shoal_mux_entry;
extern char *shoal_worker_entry;

/* pyhost.c: the embedded interpreter */
extern void shoal_python_ensure(void);
extern void shoal_python_preload(void);
extern bool shoal_python_started(void);
extern void shoal_python_raise(const char *context) pg_attribute_noreturn();
extern void shoal_python_warn(const char *context);
extern PyObject *shoal_import_attr(const char *module, const char *attr);
/* steal args and kwargs (NULL: none) */
extern PyObject *shoal_call_method(PyObject *obj, const char *method, PyObject *args);
extern PyObject *shoal_call_method_kw(PyObject *obj, const char *method, PyObject *args, PyObject *kwargs);
extern PyObject *shoal_iter_next(PyObject *iterator, const char *context);
extern PyObject *shoal_host_attr(const char *attr);

/* pgmodule.c: the `_shoal_pg` module that Python code calls back into */
extern PyObject *PyInit__shoal_pg(void);
extern void shoal_pgmodule_catch(MemoryContext oldcxt);
extern bool shoal_pgmodule_error_pending(void);
extern void shoal_pgmodule_rethrow(void) pg_attribute_noreturn();
extern void shoal_pgmodule_check(void);
extern void shoal_pgmodule_demote(void);
extern PyObject *shoal_exc_query_canceled;

/* convert.c: values between PostgreSQL and Python */
typedef struct ShoalTypeIO
{
	Oid			typoid;
	int32		typmod;
	Oid			typioparam;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	bool		fast_text;		/* text-like: converted without an input function */
	FmgrInfo	infunc;			/* text input */
	FmgrInfo	recvfunc;		/* binary receive */
	bool		have_recv;
} ShoalTypeIO;

extern void shoal_typeio_init(ShoalTypeIO *io, Oid typoid, int32 typmod);
extern PyObject *shoal_datum_to_py(Datum value, bool isnull, Oid typoid);
extern Datum shoal_py_to_datum(PyObject *obj, ShoalTypeIO *io, bool *isnull);
extern PyObject *shoal_cstring_to_py(const char *s);
extern int	shoal_portable_output_begin(void);
extern void shoal_portable_output_end(int nestlevel);
extern PyObject *shoal_datum_to_text_py(Datum value, bool isnull, Oid typoid);
extern PyObject *shoal_options_to_py(List *options);

/* binary.c: PostgreSQL binary COPY tuple data */
typedef struct ShoalBinaryReader
{
	PyObject   *chunk;			/* current chunk, held while we read it */
	Py_buffer	view;
	bool		have_view;
	Size		pos;
	StringInfoData carry;		/* a tuple split across chunks */
	StringInfoData field;		/* one field, NUL-terminated for receive functions */
	bool		seen_header;	/* the first byte of the data was seen */
	bool		in_header;		/* inside a COPY header, which may span chunks */
	char		header[19];		/* its fixed part, as collected so far */
	int			header_len;
	uint32		header_skip;	/* bytes of its extension area still to skip */
	bool		finished;		/* the COPY trailer was read */
} ShoalBinaryReader;

extern void shoal_binary_init(ShoalBinaryReader *r);
extern void shoal_binary_reset(ShoalBinaryReader *r);
extern bool shoal_binary_incomplete(ShoalBinaryReader *r);
extern void shoal_binary_feed(ShoalBinaryReader *r, PyObject *chunk);
extern bool shoal_binary_next(ShoalBinaryReader *r, TupleTableSlot *slot,
							  ShoalTypeIO *io, int nfields_short, const AttrNumber *short_map,
							  int nfields_long, const AttrNumber *long_map);
extern void shoal_binary_release(ShoalBinaryReader *r);
extern bool shoal_is_binary_chunk(PyObject *item);

/* rows.c: Python rows and tuple slots */
typedef struct ShoalRowMap
{
	int			natts;			/* of the relation, dropped columns included */
	ShoalTypeIO *io;			/* per attribute, prepared for the columns used */
	bool	   *io_ready;
	int			nshort;			/* requested columns, in table order */
	AttrNumber *short_map;
	PyObject  **short_keys;		/* their names, for mapping rows */
	int			nlong;			/* every live column; 0 where not requested */
	AttrNumber *long_map;
} ShoalRowMap;

extern void shoal_rowmap_init(ShoalRowMap *map, Relation rel, List *attnums);
extern void shoal_rowmap_prepare(ShoalRowMap *map, TupleDesc desc, AttrNumber attnum);
extern void shoal_rowmap_release(ShoalRowMap *map);
extern void shoal_row_to_slot(ShoalRowMap *map, PyObject *row, TupleTableSlot *slot);
extern PyObject *shoal_slot_to_dict(TupleTableSlot *slot, Relation rel, List *attnums, bool as_text);

/* handlers.c: one Python handler instance per foreign table */
extern PyObject *shoal_handler_for(Oid relid);
extern bool shoal_handler_flag(PyObject *handler, const char *attr);
extern List *shoal_table_options(Oid relid);
extern void shoal_handlers_init(void);
extern void shoal_handlers_release_retired(void);
extern PyObject *shoal_column_names(Relation rel, List *attnums);
extern List *shoal_attnum_list(Bitmapset *attrs);

/* quals.c: which clauses ship, as quals and SQL */
typedef enum ShoalQualKind
{
	SHOAL_QUAL_OP,				/* column op value */
	SHOAL_QUAL_ANY,				/* column op ANY(array) */
	SHOAL_QUAL_ALL,				/* column op ALL(array) */
	SHOAL_QUAL_ISNULL,
	SHOAL_QUAL_NOTNULL,
	SHOAL_QUAL_BOOL,			/* bare boolean column, or NOT column */
	SHOAL_QUAL_OTHER			/* shippable, not of a simple form: SQL only */
} ShoalQualKind;

typedef struct ShoalQual
{
	ShoalQualKind kind;
	AttrNumber	attnum;			/* the column, for the simple kinds */
	char	   *opname;			/* operator name, for OP/ANY/ALL */
	Node	   *value;			/* Const, or Integer: 1-based index into the scan's params */
	bool		boolval;		/* for SHOAL_QUAL_BOOL */
	char	   *sql;			/* the clause deparsed, with $n for params */
} ShoalQual;

extern char *shoal_remote_sql(PlannerInfo *root, Index relid, Expr *expr, List **params,
							  bool constants_as_params);
extern ShoalQual *shoal_classify_clause(PlannerInfo *root, RelOptInfo *baserel, Expr *clause,
										 List **params, bool constants_as_params);
extern char *shoal_deparse_portable(Node *expr, List *dpcontext, bool prefix);
extern bool shoal_expr_ships(Node *expr, Index relid);
extern bool shoal_evaluates_here(Node *node, Index rti, bool once);
extern List *shoal_quals_to_private(List *quals);
extern List *shoal_quals_from_private(List *private);
extern PyObject *shoal_quals_to_py(List *quals, Relation rel, Datum *paramvals, bool *paramnulls,
								   Oid *paramtypes, int nparams, bool with_sql_only, bool text_params);

/* plan.c, scan.c, modify.c: FDW callbacks */
extern void shoalGetForeignRelSize(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid);
extern void shoalGetForeignPaths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid);
extern ForeignScan *shoalGetForeignPlan(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid,
										ForeignPath *best_path, List *tlist, List *scan_clauses,
										Plan *outer_plan);
extern void shoal_register_scan_callbacks(struct FdwRoutine *routine);
extern void shoal_register_modify_callbacks(struct FdwRoutine *routine);
extern void shoal_register_direct_callbacks(struct FdwRoutine *routine);
extern void shoal_register_analyze_callbacks(struct FdwRoutine *routine);

struct ExplainState;

/* scan.c, for direct.c: a ForeignScan node whose rows come from a handler call */
extern void shoal_scan_begin(ForeignScanState *node, int eflags, bool start);
extern PyObject *shoal_scan_quals(ForeignScanState *node);
extern void shoal_scan_set_result(ForeignScanState *node, PyObject *result);
extern TupleTableSlot *shoal_scan_next(ForeignScanState *node);
extern bool shoal_scan_started(ForeignScanState *node);
extern void shoal_scan_end(ForeignScanState *node);
extern List *shoal_live_attrs(Relation rel);
extern PyObject *shoal_scan_explain_quals(ForeignScanState *node, struct ExplainState *es);
extern void shoal_explain_handler_lines(PyObject *lines, struct ExplainState *es);

/* fdw_private of a ForeignScan, by position */
enum ShoalScanPrivate
{
	SHOAL_PRIVATE_COLUMNS,		/* Integer list: attnums to fetch, in table order */
	SHOAL_PRIVATE_QUALS,		/* quals, see shoal_quals_to_private */
	SHOAL_PRIVATE_SORTKEYS,		/* list of (attnum, reversed, nulls_first, collation) */
	SHOAL_PRIVATE_LIMIT,		/* Integer, -1 for none */
	SHOAL_PRIVATE_EXACT,		/* Integer: handler enforces the quals */
	SHOAL_PRIVATE_DIRECT		/* UPDATE/DELETE run whole by the handler, see direct.c */
};

/* scan.c / snapshot.c: one cut across nodes for a statement's scans */
extern int	shoal_current_cut;
extern bool shoal_consistent_snapshots;
extern PyObject *shoal_scan_handler(ForeignScanState *node);
extern void shoal_scan_start_deferred(ForeignScanState *node, int cut);
extern bool shoal_defer_scan(ForeignScanState *node, Oid server);
extern void shoal_snapshot_init(void);
extern void shoal_utility_cut(PlannedStmt *pstmt);
extern bool shoal_has_foreign_partitions(Oid relid);
extern bool shoal_gate_acquire(bool write, bool wait, bool session);
extern void shoal_gate_release(bool write, bool session);
extern void shoal_refresh_snapshot(void);

/* upsert.c: INSERT ... ON CONFLICT DO UPDATE sent on to a handler */
extern List *shoal_upsert_take_target(Query *parse);
extern void shoal_upsert_keep_target(PlannedStmt *stmt, List *targets);
extern PyObject *shoal_upsert_clause(ModifyTableState *mtstate, int first, List **exprs);
extern PyObject *shoal_upsert_values(ModifyTableState *mtstate, List *exprs);

/* pruning.c: generic plans cost what they run after initial pruning */
extern void shoal_cost_initial_pruning(PlannedStmt *stmt);

/* xact.c: transaction callbacks reach the handlers a transaction used */
extern void shoal_xact_init(void);
extern void shoal_xact_touch(PyObject *handler);
extern void shoal_xact_guard_lock_waits(void);
extern void shoal_xact_admit(int slots, bool wait);
extern void shoal_record_decision(const char *gid);
extern char *shoal_prepare_gid;

/* sqlfunc.c: SQL functions written in Python; DDL seen by Python */
extern PyObject *shoal_utility_before(PlannedStmt **pstmt, const char *queryString);

/* roles.c: where the password of a role statement is */
extern void shoal_describe_password(Node *parsetree, const char *sql, int stmt_location,
									PyObject *info);
extern void shoal_utility_after(PyObject *after);

/* bgworker.c: the multiplexer and its workers, background processes */
extern bool shoal_in_bgworker;
extern void shoal_bgworkers_init(void);

/* jobs.c: what a worker runs for other nodes; functions of `_shoal_pg` */
extern int	shoal_jobs_module_init(PyObject *mod);
extern PyObject *shoal_job_execute(PyObject *self, PyObject *args, PyObject *kwargs);
extern PyObject *shoal_job_begin(PyObject *self, PyObject *args, PyObject *kwargs);
extern PyObject *shoal_job_commit(PyObject *self, PyObject *args, PyObject *kwargs);
extern PyObject *shoal_job_rollback(PyObject *self, PyObject *unused);
extern PyObject *shoal_job_savepoint(PyObject *self, PyObject *args);
extern PyObject *shoal_job_release(PyObject *self, PyObject *args);
extern PyObject *shoal_job_rollback_to(PyObject *self, PyObject *args);
extern PyObject *shoal_job_prepare(PyObject *self, PyObject *args, PyObject *kwargs);
extern PyObject *shoal_job_commit_prepared(PyObject *self, PyObject *args);
extern PyObject *shoal_job_rollback_prepared(PyObject *self, PyObject *args);
extern PyObject *shoal_job_in_block(PyObject *self, PyObject *unused);
extern PyObject *shoal_job_block_failed(PyObject *self, PyObject *unused);
extern PyObject *shoal_job_clear_cancel(PyObject *self, PyObject *unused);
extern PyObject *shoal_job_hold_snapshot(PyObject *self, PyObject *unused);
extern PyObject *shoal_job_drop_snapshot(PyObject *self, PyObject *unused);
extern PyObject *shoal_pg_setting(PyObject *self, PyObject *args);

#endif							/* SHOAL_H */
