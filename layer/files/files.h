/* files/ - files opened in the target (tether exec): the resolver's files,
 * opened by the agent there (files.c).  Uses core/ and link/. */
#ifndef TETHER_FILES_H
#define TETHER_FILES_H

#include "core/core.h"

void tether_files_install(void);

#endif
