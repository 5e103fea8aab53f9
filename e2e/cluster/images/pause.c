/* The pod sandbox's infra process: hold the pod's namespaces, reap zombies
 * (it is PID 1 when the pod shares its PID namespace), exit on SIGINT/SIGTERM.
 * Built with gcc -static into a scratch image (localhost/ringlane-pause:dev),
 * because there is no registry to pull registry.k8s.io/pause from. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) { puts("ringlane-pause 1"); return 0; }
  if (getpid() != 1) fprintf(stderr, "pause: warning: not PID 1\n");
  struct sigaction term = {.sa_handler = on_term}, child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &term, NULL) || sigaction(SIGTERM, &term, NULL) || sigaction(SIGCHLD, &child, NULL)) {
    perror("sigaction");
    return 1;
  }
  for (;;) pause();
}
