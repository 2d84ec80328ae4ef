"use strict";
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = document.getElementById("err");
  err.textContent = "";
  const btn = document.getElementById("submit");
  btn.disabled = true;
  try {
    const r = await fetch("/api/login", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: document.getElementById("username").value.trim(), password: document.getElementById("password").value }),
    });
    const d = await r.json().catch(() => ({}));
    if (!r.ok) { err.textContent = d.error || "log in failed"; return; }
    const next = new URLSearchParams(location.search).get("next");
    location.href = next && next.startsWith("/") && !next.startsWith("//") ? next : d.go;
  } catch (e) {
    err.textContent = "the server cannot be reached: " + e.message;
  } finally {
    btn.disabled = false;
  }
});
