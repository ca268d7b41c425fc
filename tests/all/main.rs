//! One integration-test binary, so linking is paid once.

mod runtime;
