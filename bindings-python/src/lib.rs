//! `megavisor._native`: the native half of the `megavisor` Python package.
//!
//! It wraps [`megavisor_driver`] (embedded or connected, one API) and nothing else: no
//! protocol code of its own. The pure-Python half (`python/megavisor/`) adds `arun`, the
//! default bundle's location, the exception classes and the LangChain adapter.

mod completions;
mod driver;
mod errors;
mod output;

use pyo3::prelude::*;

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<driver::Driver>()?;
    module.add_class::<driver::Pending>()?;
    module.add_class::<output::RunResult>()?;
    module.add_class::<output::Timings>()?;
    module.add_class::<output::Usage>()?;
    module.add_class::<output::ToolInfo>()?;
    module.add_class::<completions::Completions>()?;
    module.add_function(wrap_pyfunction!(errors::error_kinds, module)?)?;
    Ok(())
}
