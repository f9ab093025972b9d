/*-------------------------------------------------------------------------
 * fdw.c
 *		The shoal_fdw handler function: the FDW callbacks, wired up.
 *-------------------------------------------------------------------------
 */
#include "shoal.h"

#include "foreign/fdwapi.h"

PG_FUNCTION_INFO_V1(shoal_fdw_handler);

Datum
shoal_fdw_handler(PG_FUNCTION_ARGS)
{
	FdwRoutine *routine = makeNode(FdwRoutine);

	routine->GetForeignRelSize = shoalGetForeignRelSize;
	routine->GetForeignPaths = shoalGetForeignPaths;
	routine->GetForeignPlan = shoalGetForeignPlan;
	shoal_register_scan_callbacks(routine);
	shoal_register_modify_callbacks(routine);
	shoal_register_direct_callbacks(routine);
	shoal_register_analyze_callbacks(routine);
	PG_RETURN_POINTER(routine);
}
