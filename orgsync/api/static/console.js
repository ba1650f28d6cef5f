// orgsync console: the little behaviour the pages need (served from /static: the CSP allows no inline script)
"use strict";

// checkboxes that reveal a group of fields; a hidden group is disabled, so nothing of it is posted
function revealers() {
  for (const box of document.querySelectorAll("input[data-reveals]")) {
    const group = document.getElementById(box.dataset.reveals);
    if (!group) continue;
    const apply = () => {
      group.hidden = !box.checked;
      box.setAttribute("aria-expanded", String(box.checked));
      for (const field of group.querySelectorAll("input, textarea, select")) field.disabled = !box.checked;
    };
    box.addEventListener("change", apply);
    apply();
  }
}

// the member role's ARN as it will be assumed in each account, shown while it is typed
function arnPreview() {
  const name = document.getElementById("member_role_name");
  const orgRole = document.getElementById("org_role_arn");
  const out = document.getElementById("member-arn-preview");
  if (!name || !out) return;
  const update = () => {
    const match = /^arn:([a-z-]+):/.exec(orgRole ? orgRole.value.trim() : "");
    const partition = match ? match[1] : "aws";
    const role = name.value.trim().replace(/^\/+|\/+$/g, "") || "<name>";
    out.textContent = `arn:${partition}:iam::<account-id>:role/${role}`;
  };
  name.addEventListener("input", update);
  if (orgRole) orgRole.addEventListener("input", update);
  update();
}

// forms that ask before they do something that cannot be undone
function confirmations() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
}

// a submitted form's button is disabled, so that a double click asks once
function singleSubmit() {
  for (const form of document.querySelectorAll("form[method='post']")) {
    form.addEventListener("submit", (event) => {
      if (event.defaultPrevented) return;
      const button = form.querySelector("button[type='submit']");
      if (button) window.setTimeout(() => { button.disabled = true; }, 0);
    });
  }
  // a page shown again from the back-forward cache gets its buttons back
  window.addEventListener("pageshow", (event) => {
    if (!event.persisted) return;
    for (const button of document.querySelectorAll("form button[type='submit']")) button.disabled = false;
  });
}

// a running sync: its progress from the JSON API (the session cookie signs the request), the page
// reloaded when it is done so that the card shows how it ended
function followSyncs() {
  for (const box of document.querySelectorAll("[data-request]")) {
    const id = box.dataset.request;
    const text = box.querySelector(".progress-text");
    const bar = box.querySelector("progress");
    const poll = async () => {
      let response;
      try {
        response = await fetch(`/api/v1/requests/${encodeURIComponent(id)}`, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
      } catch (error) {
        window.setTimeout(poll, 2000);
        return;
      }
      if (response.status === 401) {
        window.location.assign("/signin");
        return;
      }
      if (response.ok) {
        const progress = await response.json();
        const total = progress.done + progress.pending;
        if (bar) {
          bar.max = Math.max(total, 1);
          bar.value = progress.done;
        }
        if (progress.finished) {
          if (text) text.textContent = progress.ok ? "Sync finished." : "Sync finished with failures.";
          window.setTimeout(() => window.location.reload(), 300);
          return;
        }
        if (text) text.textContent = `Syncing: ${progress.done} of ${total} steps done`;
      }
      window.setTimeout(poll, 1000);
    };
    window.setTimeout(poll, 500);
  }
}

// after a refused form, the list of what to fix takes the focus (screen readers read it at once)
function focusProblems() {
  const problems = document.getElementById("form-problems");
  if (problems) problems.focus();
}

// the template download links follow what the form holds (never an external id's value: only whether one is given)
function templateLinks() {
  const links = document.querySelectorAll("a[data-template]");
  if (!links.length) return;
  const value = (id) => (document.getElementById(id) || { value: "" }).value.trim();
  const duration = (id) => String(Math.max(3600, parseInt(value(id), 10) || 3600));
  const update = () => {
    for (const link of links) {
      const url = new URL(link.href, window.location.origin);
      if (link.dataset.template === "members") {
        url.searchParams.set("role_name", value("member_role_name") || "OrgSyncMember");
        url.searchParams.set("max_session_duration", duration("member_session_duration"));
        if (value("member_external_id")) url.searchParams.set("external_id", "1");
      } else {
        url.searchParams.set("max_session_duration", duration("org_session_duration"));
        if (value("org_external_id")) url.searchParams.set("external_id", "1");
      }
      link.href = url.pathname + url.search;
    }
  };
  for (const id of ["member_role_name", "member_session_duration", "member_external_id", "org_session_duration",
                    "org_external_id"]) {
    const field = document.getElementById(id);
    if (field) field.addEventListener("input", update);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  revealers();
  arnPreview();
  templateLinks();
  confirmations();
  singleSubmit();
  followSyncs();
  focusProblems();
});
