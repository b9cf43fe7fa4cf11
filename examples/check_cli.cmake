# Runs one example with arguments and checks its exit status and what it prints (stdout and
# stderr together): the command-line contract of examples/common/cli.hpp.
#   cmake -DPROGRAM=path -DARGS="--events|1e30" -DCODE=2 -DMATCH=regex -P check_cli.cmake
string(REPLACE "|" ";" _args "${ARGS}")
execute_process(COMMAND "${PROGRAM}" ${_args} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
if(NOT "${_rc}" STREQUAL "${CODE}")
  message(FATAL_ERROR "${PROGRAM} ${_args}: exit status ${_rc}, expected ${CODE}\n${_out}${_err}")
endif()
if(NOT "${_out}${_err}" MATCHES "${MATCH}")
  message(FATAL_ERROR "${PROGRAM} ${_args}: output does not match '${MATCH}':\n${_out}${_err}")
endif()
