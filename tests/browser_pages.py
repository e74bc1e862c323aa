"""Helpers of the browser tests: waiting on a page, loading one with its console log, and the check
that hostile corpus text stayed text."""

from __future__ import annotations

import time

MARK = "pwned"
HOSTILE_LINES = [
    '<script>window.pwned = 1; document.title = "pwned"</script>',
    "<img src=x onerror=\"window.pwned = 2; document.title = 'pwned'\">",
    "</script><script>window.pwned = 3</script><!-- ",
    '"><svg onload=alert(1)>',
]


def wait_for(driver, script: str, timeout: float = 20.0):
    """Poll a JS expression until it is truthy; return its value."""
    end = time.time() + timeout
    while time.time() < end:
        value = driver.execute_script("return " + script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


def open_page(driver, url: str) -> list[dict]:
    """Load `url`, wait for the document, return the browser log gathered so far."""
    driver.get_log("browser")  # drop earlier entries
    driver.get(url)
    wait_for(driver, "document.readyState === 'complete'")
    return driver.get_log("browser")


def assert_clean(driver, logs: list[dict], origin: str = "file:") -> None:
    logs = logs + driver.get_log("browser")
    severe = [entry for entry in logs if entry["level"] == "SEVERE"]
    assert not severe, severe
    assert driver.execute_script("return window.pwned === undefined"), "injected script ran"
    # the page fetched nothing but its own files, and links only within the report
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(url.startswith(origin) for url in resources), resources
    links = driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    assert all(url.startswith((origin, "javascript:void")) or url.endswith("#") for url in links), links
    assert MARK not in driver.title
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
        text = alert.text
        alert.dismiss()
        raise AssertionError(f"an alert opened: {text}")
    except NoAlertPresentException:
        pass
