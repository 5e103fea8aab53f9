/* llhttp's llhttp.c from Debian's node-llhttp (/usr/share/llhttp, on the include path set by
 * build_core.py), compiled here and never copied into the repository. Its callbacks leave
 * parameters unused, which -Wextra -Werror rejects: silenced for this file only. */
#pragma GCC diagnostic ignored "-Wunused-parameter"
/* The strict build: the lenient one skips any two bytes after chunk data where CRLF must be,
 * so a proxy that forwards the framing would pass on a chunk stream its backend reads
 * differently (request smuggling). */
#define LLHTTP_STRICT_MODE 1
#include <llhttp.c>
