/* llhttp's http.c from Debian's node-llhttp (/usr/share/llhttp, on the include path set by
 * build_core.py), compiled here and never copied into the repository. Its callbacks leave
 * parameters unused, which -Wextra -Werror rejects: silenced for this file only. */
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <http.c>
