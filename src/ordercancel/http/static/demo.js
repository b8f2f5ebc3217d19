// The demo page: build a well-formed request, send it to this server, show the raw exchange.
"use strict";

(() => {
  const page = document.body.dataset;
  const byId = (id) => document.getElementById(id);

  /** Show the first and last four characters of an API code, never the rest. */
  function maskApiCode(code) {
    if (code.length <= 8) return "\u2022".repeat(code.length);
    return code.slice(0, 4) + code.slice(4, -4).replace(/[^-]/g, "\u2022") + code.slice(-4);
  }

  function escapeXml(text) {
    return String(text)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      .replace(/'/g, "&apos;");
  }

  const isJson = (mediaType) => /json/i.test(mediaType);

  function encodeBody(mediaType, root, fields) {
    if (isJson(mediaType)) return JSON.stringify(fields);
    const inner = Object.entries(fields)
      .map(([name, value]) => `<${name}>${escapeXml(value)}</${name}>`)
      .join("");
    return `<${root}>${inner}</${root}>`;
  }

  function parseXml(text) {
    const doc = new DOMParser().parseFromString(text, "application/xml");
    return doc.getElementsByTagName("parsererror").length ? null : doc;
  }

  function prettyXml(text) {
    const doc = parseXml(text);
    if (!doc) return text;
    const lines = /^\s*<\?xml[^>]*\?>/.test(text) ? [text.trim().match(/^<\?xml[^>]*\?>/)[0]] : [];
    const walk = (element, depth) => {
      const pad = "  ".repeat(depth);
      const children = Array.from(element.children);
      if (!children.length) {
        lines.push(`${pad}<${element.nodeName}>${escapeXml(element.textContent)}</${element.nodeName}>`);
        return;
      }
      lines.push(`${pad}<${element.nodeName}>`);
      children.forEach((child) => walk(child, depth + 1));
      lines.push(`${pad}</${element.nodeName}>`);
    };
    walk(doc.documentElement, 0);
    return lines.join("\n");
  }

  function pretty(mediaType, text) {
    if (!text) return "";
    if (isJson(mediaType)) {
      try {
        return JSON.stringify(JSON.parse(text), null, 2);
      } catch {
        return text;
      }
    }
    return /xml/i.test(mediaType) ? prettyXml(text) : text;
  }

  /** Read an answer's top-level fields (and requestError's) whatever its format. */
  function decode(mediaType, text) {
    if (isJson(mediaType)) {
      try {
        return JSON.parse(text);
      } catch {
        return null;
      }
    }
    const doc = parseXml(text);
    if (!doc) return null;
    const read = (element) => {
      const fields = {};
      for (const child of element.children) {
        fields[child.nodeName] = child.children.length ? read(child) : child.textContent;
      }
      return fields;
    };
    const fields = read(doc.documentElement);
    if ("isCanceled" in fields) fields.isCanceled = fields.isCanceled === "true";
    return fields;
  }

  function showOutcome(text, kind, hint) {
    const outcome = byId("outcome");
    outcome.textContent = text;
    outcome.className = `outcome ${kind}`;
    // The sandbox's X-OrderCancel-Hint: why, in one sentence, where the code alone does not say.
    const hintLine = byId("hint");
    hintLine.textContent = hint ? `Hint: ${hint}` : "";
    hintLine.hidden = !hint;
  }

  /** A UUID4 for the Idempotency-Key; crypto.randomUUID exists only in a secure context (https, localhost). */
  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // the RFC 4122 variant
    const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  function showReplayed(replayed) {
    // Idempotent-Replayed: true says this answer is the stored one, and that nothing changed now.
    const line = byId("replayed");
    line.textContent = replayed
      ? "Replayed (Idempotent-Replayed: true): the answer of an earlier request with this key; nothing changed now."
      : "";
    line.hidden = !replayed;
  }

  let lastHint = null;

  /** POST a body to this server and show the exchange; return the decoded answer (or null). */
  async function exchange(path, mediaType, accept, body, idempotencyKey = "") {
    const apiCode = byId("api-code").value.trim();
    lastHint = null;
    showReplayed(false);
    if (!apiCode) {
      // Sending it would only get a 401: say what is missing instead.
      const demo = byId("use-demo-code");
      showOutcome(
        "Not sent: the API code is missing. Paste yours above" + (demo ? ", or use the demo code." : "."),
        "refused",
      );
      byId("api-code").focus();
      return null;
    }
    const headers = { apiCode, "Content-Type": mediaType, Accept: accept };
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    byId("request").textContent = [
      `POST ${path} HTTP/1.1`,
      `Host: ${location.host}`,
      `apiCode: ${maskApiCode(apiCode)}`,
      `Content-Type: ${mediaType}`,
      `Accept: ${accept}`,
      ...(idempotencyKey ? [`Idempotency-Key: ${idempotencyKey}`] : []),
      `Content-Length: ${new TextEncoder().encode(body).length}`,
      "",
      pretty(mediaType, body),
    ].join("\n");
    byId("response").textContent = "\u2026";
    let response;
    let text;
    try {
      response = await fetch(path, { method: "POST", headers, body, credentials: "omit", cache: "no-store" });
      text = await response.text();
    } catch (error) {
      byId("response").textContent = `No answer: ${error.message}`;
      showOutcome("The server did not answer.", "refused");
      return null;
    }
    const contentType = response.headers.get("content-type") || "";
    lastHint = response.headers.get("x-ordercancel-hint");
    showReplayed(response.headers.get("idempotent-replayed") === "true");
    const lines = [`HTTP/1.1 ${response.status} ${response.statusText}`];
    response.headers.forEach((value, name) => lines.push(`${name}: ${value}`));
    lines.push("", pretty(contentType, text));
    byId("response").textContent = lines.join("\n");
    return decode(contentType, text) || {};
  }

  function describeError(answer) {
    const error = answer.requestError || {};
    return `${error.code || "?"}: ${error.message || "no message"}`;
  }

  async function busy(button, work) {
    button.disabled = true;
    try {
      await work();
    } finally {
      button.disabled = false;
    }
  }

  byId("cancel-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const mediaType = byId("request-format").value;
    const fields = { [page.field]: byId("order-ref").value.trim() };
    // Optional: left out of the body when not chosen, so the request is the one without them.
    const reason = byId("reason").value;
    const note = byId("note").value;
    if (reason) fields.reason = reason;
    if (note) fields.note = note;
    busy(byId("send"), async () => {
      const answer = await exchange(
        page.apiPath,
        mediaType,
        byId("accept").value,
        encodeBody(mediaType, page.requestRoot, fields),
        byId("idempotency-key").value.trim(),
      );
      if (!answer) return;
      if (answer.isCanceled === true) {
        showOutcome(`Cancelled: order ${answer.orderNumber} (${answer.orderId}).`, "ok", lastHint);
      } else {
        showOutcome(`Not cancelled. ${describeError(answer)}`, "refused", lastHint);
      }
    });
  });

  byId("new-key").addEventListener("click", () => {
    byId("idempotency-key").value = newKey();
  });

  const demoCode = byId("use-demo-code");
  if (demoCode) {
    demoCode.addEventListener("click", () => {
      byId("api-code").value = demoCode.dataset.code;
      showOutcome("The demo API code is filled in (masked): create a test order or cancel one.", "ok");
    });
  }

  const testOrderForm = byId("test-order-form");
  if (testOrderForm) {
    testOrderForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const mediaType = byId("request-format").value;
      const fields = { status: byId("test-status").value, paymentStatus: byId("test-payment-status").value };
      const engineer = byId("test-engineer").value.trim();
      if (engineer) fields.engineer = engineer;
      busy(byId("create-test-order"), async () => {
        const answer = await exchange(
          testOrderForm.dataset.path,
          mediaType,
          byId("accept").value,
          encodeBody(mediaType, "CreateTestOrderRequest", fields),
        );
        if (!answer) return;
        if (answer.orderId) {
          byId("order-ref").value = page.field === "orderId" ? answer.orderId : answer.orderNumber;
          showOutcome(
            `Test order ${answer.orderNumber} (${answer.orderId}) created: ${answer.status}, ${answer.paymentStatus}` +
              (answer.engineer ? `, held by ${answer.engineer}.` : "."),
            "ok",
            lastHint,
          );
        } else {
          showOutcome(`No test order created. ${describeError(answer)}`, "refused", lastHint);
        }
      });
    });
  }
})();
