/* files/ - files opened in the target (tether exec): the paths the
 * session's file rules (rules.c) give to the target, opened in the target's
 * root (target.c, paths.c); or only the resolver's files (files.c).  Uses
 * core/ and link/. */
#ifndef TETHER_FILES_H
#define TETHER_FILES_H

#include "core/core.h"

/* For mode (TETHER_MODE_FILES or _DNS): 0, or -1 (the rules are unusable). */
int tether_files_install(unsigned mode);

#endif
