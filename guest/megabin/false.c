#include "tools.h"

/* Like coreutils' false: fails and ignores its arguments. */
int false_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return 1;
}
