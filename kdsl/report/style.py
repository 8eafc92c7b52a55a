"""The report page's stylesheet, inlined into the page (the page loads nothing)."""

CSS = """
:root{--fg:#1d2330;--muted:#5b6473;--line:#d9dee7;--bg:#f6f7f9;--ok:#1f7a45;--bad:#b3362b;--accent:#2457a6}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI","Noto Sans","Noto Sans CJK SC","PingFang SC",
"Microsoft YaHei",sans-serif;color:var(--fg);background:var(--bg)}
header,main{max-width:1280px;margin:0 auto;padding:0 20px}
header{padding-top:18px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:15px;margin:18px 0 6px}
nav{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0 4px}
nav a{color:var(--accent);text-decoration:none}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:4px 18px 16px;margin:16px 0}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:10px 0}
dl.meta dt{color:var(--muted)} dl.meta dd{margin:0;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:150px;background:#fbfcfd}
.card .label{color:var(--muted);font-size:12px}.card .value{font-size:22px;font-weight:600}
.card .sub{color:var(--muted);font-size:12px}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5;position:sticky;top:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{border-top:2px solid var(--fg);font-weight:600}
tr.accepted{background:#eef8f1} tr.refused td{color:#444}
.badge{display:inline-block;padding:0 6px;border-radius:4px;font-size:12px;font-weight:600;color:#fff}
.badge.accepted{background:var(--ok)} .badge.refused{background:var(--bad)} .badge.candidate{background:#888}
code{font-size:12px;background:#f1f3f6;padding:0 3px;border-radius:3px;overflow-wrap:anywhere}
#rules-table td:nth-child(-n+2),#rules-table td:nth-child(9){white-space:nowrap}
#rules-table td:nth-child(3){min-width:180px} #rules-table td:nth-child(4){min-width:220px}
pre{white-space:pre-wrap;word-break:break-all;font-size:12px;margin:4px 0}
.note{color:var(--muted)} .warn{color:#8a4b00;background:#fff6e5;border:1px solid #f0d39b;padding:6px 10px;
border-radius:6px}
.sub{color:var(--muted)}
.scroll{overflow-x:auto}
table.confusion td{min-width:26px;text-align:center} table.confusion td.diag{font-weight:700}
table.confusion th.rowlabel{white-space:nowrap;font-weight:400;background:#fff;position:static}
ul.tree,ul.tree ul{list-style:none;margin:0;padding-left:18px;border-left:1px dashed var(--line)}
ul.tree{padding-left:4px;border:none}
ul.tree li{margin:2px 0}
ul.tree summary{cursor:pointer}
ul.tree li.best>.node,ul.tree li.best>details>summary>.node{background:#e4f3e9;border-radius:4px;padding:0 4px;
outline:1px solid #9fd3b1}
.node .stats,.count{color:var(--muted);font-size:12px}
.node .edit{word-break:break-all}
ol.path li{margin:2px 0}
svg.curve{max-width:100%;height:auto;font-size:11px;fill:var(--muted)}
svg.curve .grid{stroke:var(--line)} svg.curve .best{fill:none;stroke:var(--ok);stroke-width:2}
svg.curve .dot{fill:var(--accent);opacity:.6}
#timeline tr.nodeevent td{background:#f7f8fb}
#timeline td:last-child{max-width:560px;word-break:break-all}
footer{color:var(--muted);font-size:12px;text-align:center;padding:20px}
"""

