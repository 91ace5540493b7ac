/* The tools of the megabinary; main.c maps each name in argv[0] to one of these. */
#ifndef MEGABIN_TOOLS_H
#define MEGABIN_TOOLS_H

#include "common.h"

tool_fn base64_main;
tool_fn calc_main;
tool_fn cat_main;
tool_fn echo_main;
tool_fn false_main;
tool_fn grep_main;
tool_fn head_main;
tool_fn jsonfmt_main;
tool_fn ls_main;
tool_fn seq_main;
tool_fn sha256sum_main;
tool_fn sort_main;
tool_fn tail_main;
tool_fn tr_main;
tool_fn true_main;
tool_fn uniq_main;
tool_fn wc_main;

#endif
