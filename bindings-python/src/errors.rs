//! Driver errors as the package's typed exceptions (`megavisor.errors`).

use megavisor_driver::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use crate::output::RunResult;

/// `megavisor.errors.BY_KIND`: exception class by error kind, looked up once.
static BY_KIND: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

/// The exception for a driver error: its kind's class from `megavisor.errors`, carrying
/// the message, the kind and the partial output (what the tool wrote before it was stopped).
pub(crate) fn exception(py: Python<'_>, err: &Error) -> PyErr {
    match instance(py, err) {
        Ok(exception) => PyErr::from_value(exception),
        Err(lookup_failed) => lookup_failed,
    }
}

fn instance<'py>(py: Python<'py>, err: &Error) -> PyResult<Bound<'py, PyAny>> {
    let by_kind = BY_KIND.get_or_try_init(py, || -> PyResult<Py<PyDict>> {
        let errors = py.import("megavisor.errors")?;
        Ok(errors.getattr("BY_KIND")?.cast_into::<PyDict>()?.unbind())
    })?;
    let by_kind = by_kind.bind(py);
    let class = match by_kind.get_item(err.kind().as_str())? {
        Some(class) => class,
        None => by_kind
            .get_item("internal")?
            .expect("megavisor.errors maps `internal`"),
    };
    let partial = err
        .partial_output()
        .map(|output| RunResult::new(py, output.clone()))
        .transpose()?;
    class.call1((err.to_string(), err.kind().as_str(), partial))
}
