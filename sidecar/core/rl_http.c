/* rl_http: the HTTP/1.1 reverse proxy state machine (in progress: see the data-plane issue).
 * Until it lands, the Python agent refuses configs with HTTP listeners, so this is unreachable. */
#include <unistd.h>

#include "rl_conn.h"

void rl_http_accept(rl_worker *w, const rl_listener_cfg *lc, int fd)
{
    (void)w;
    (void)lc;
    close(fd);
}
