/*-------------------------------------------------------------------------
 * roles.c
 *		Role DDL as shoal replays it on the other nodes: where its password is.
 *
 * CREATE and ALTER ROLE run as written on every node (shoal.sharding.ddl),
 * but a password would cross the channel between nodes, which is not
 * encrypted, as the client typed it.  shoal replays the verifier this node
 * stored instead (shoal.sharding.roles), in place of the literal.  The parse
 * tree keeps the location of the option, not of its literal: PostgreSQL's
 * own scanner finds the literal from there, as the parser read it.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "parser/gramparse.h"
#include "parser/scanner.h"
#include "utils/acl.h"

/*
 * The bytes [*start, *end) of sql that hold the first string literal at or
 * after offset from, up to the next token (comments between go with it).
 */
static bool
literal_span(const char *sql, int from, int *start, int *end)
{
	core_yy_extra_type yyextra;
	core_YYSTYPE yylval;
	YYLTYPE		yylloc;
	core_yyscan_t scanner;
	int			token;
	bool		found = false;

	scanner = scanner_init(sql, &yyextra, &ScanKeywords, ScanKeywordTokens);
	while ((token = core_yylex(&yylval, &yylloc, scanner)) != 0)
	{
		if (found)
		{
			if (token == UESCAPE)
			{
				(void) core_yylex(&yylval, &yylloc, scanner);	/* its character */
				continue;
			}
			break;
		}
		if (yylloc >= from && (token == SCONST || token == USCONST))
		{
			*start = yylloc;
			found = true;
		}
	}
	*end = token == 0 ? (int) strlen(sql) : yylloc;
	scanner_finish(scanner);
	return found;
}

/*
 * For CREATE or ALTER ROLE that sets a password: the role's name and where
 * the password's literal is in sql (the statement's own text, which starts
 * at offset stmt_location of the query string the locations refer to), as
 * "password_role" and "password_span" in info.
 */
void
shoal_describe_password(Node *parsetree, const char *sql, int stmt_location, PyObject *info)
{
	List	   *options;
	const char *role;
	ListCell   *lc;

	if (IsA(parsetree, CreateRoleStmt))
	{
		options = ((CreateRoleStmt *) parsetree)->options;
		role = ((CreateRoleStmt *) parsetree)->role;
	}
	else if (IsA(parsetree, AlterRoleStmt))
	{
		options = ((AlterRoleStmt *) parsetree)->options;
		role = get_rolespec_name(((AlterRoleStmt *) parsetree)->role);
	}
	else
		return;
	foreach(lc, options)
	{
		DefElem    *option = lfirst_node(DefElem, lc);
		int			start = 0;
		int			end = 0;
		PyObject   *name;
		PyObject   *span;
		bool		ok;

		if (strcmp(option->defname, "password") != 0 || option->arg == NULL)
			continue;
		if (!literal_span(sql, option->location - Max(stmt_location, 0), &start, &end))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("shoal could not find the password in the statement")));
		name = PyUnicode_FromString(role);
		span = Py_BuildValue("(ii)", start, end);
		ok = name != NULL && span != NULL &&
			PyDict_SetItemString(info, "password_role", name) == 0 &&
			PyDict_SetItemString(info, "password_span", span) == 0;
		Py_XDECREF(name);
		Py_XDECREF(span);
		if (!ok)
			shoal_python_raise("describing a role statement");
	}
}
