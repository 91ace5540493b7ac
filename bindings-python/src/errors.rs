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

/// The one table of error kinds (`megavisor_client::kinds`), for the tests that hold
/// `megavisor.errors` to it: one dict per kind.
#[pyfunction]
pub(crate) fn error_kinds(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    megavisor_driver::KINDS
        .iter()
        .map(|info| {
            let kind = PyDict::new(py);
            kind.set_item("name", info.name)?;
            kind.set_item("python_class", info.python_class)?;
            kind.set_item("exit_code", info.exit_code)?;
            kind.set_item("grpc_code", info.grpc_code)?;
            kind.set_item("c_status", info.c_status)?;
            Ok(kind)
        })
        .collect()
}
