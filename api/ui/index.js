// The index of worlds (GET /v1/worlds, every page), each linking to its live view.
"use strict";

async function listWorlds() {
  const list = document.getElementById("worlds");
  const banner = document.getElementById("problem");
  const names = [];
  let after = "";
  for (;;) {
    const answer = await callApi("/v1/worlds?limit=1000" + (after ? "&after=" + encodeURIComponent(after) : ""));
    if (!answer.ok) {
      banner.hidden = false;
      banner.textContent = describeProblem(answer);
      if (answer.status === 401 || answer.status === 403) showKeyBox(document.getElementById("keybox"), "");
      return;
    }
    names.push(...answer.body.worlds);
    if (!answer.body.next) break;
    after = answer.body.next.after;
  }
  list.replaceChildren(...names.map((w) => el("li", {}, el("a", {href: "/ui/worlds/" + encodeURIComponent(w)}, w))));
  if (!names.length) {
    list.replaceChildren(el("li", {class: "muted"}, "no worlds yet: PUT /v1/worlds/{world} makes one"));
  }
}

takeKeyFromFragment();
installKeyBox(document.getElementById("keybox"), () => location.reload());
document.getElementById("show-key").addEventListener("click", () => showKeyBox(document.getElementById("keybox"), ""));
listWorlds();
