# ALPS_PROBE_CFLAG(FLAG, ACTION-IF-OK)
# Compile an empty program with FLAG (and -Werror so that unknown flags fail).
AC_DEFUN([ALPS_PROBE_CFLAG], [
  AS_VAR_PUSHDEF([cache], [alps_cv_cflag_$1])
  AC_CACHE_CHECK([whether $CC accepts $1], [cache], [
    alps_save_CFLAGS="$CFLAGS"
    CFLAGS="$CFLAGS -Werror $1"
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([], [])], [AS_VAR_SET([cache], [yes])], [AS_VAR_SET([cache], [no])])
    CFLAGS="$alps_save_CFLAGS"
  ])
  AS_VAR_IF([cache], [yes], [$2])
  AS_VAR_POPDEF([cache])
])
