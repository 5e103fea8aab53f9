/* rl_api: the headers whose "cffi:begin ... cffi:end" regions form the Python-facing API.
 * build_core.py reads those regions, in this order, as cffi's cdef. */
#ifndef RL_API_H
#define RL_API_H

#include "rl_probe.h"
#include "rl_stats.h"
#include "rl_cfg.h"
#include "rl_core.h"
#include "rl_steer.h"
#include "rl_engine_uring.h"
#include "rl_confine.h"

#endif
