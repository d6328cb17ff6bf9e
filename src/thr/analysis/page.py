"""Self-contained HTML pages: shared CSS, the token tooltip and small SVG charts in vanilla JS.

Nothing is fetched from the network. Chart data travel as JSON in a ``<script type=
"application/json" id="thr-data">`` block; the page draws every chart into its ``<div
class="chart">`` and then sets ``data-rendered`` on ``<body>`` to the number of charts drawn (a
chart that fails shows its error in place, is logged with ``console.error`` and counted in
``data-failed``; the others are still drawn).
Uncaught errors are collected in ``data-errors`` on ``<html>`` (checked by the browser test).
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

CSS = """
:root{--fg:#1b1f24;--muted:#5b6470;--line:#d9dee4;--pos:#2166ac;--neg:#b2182b;--bg:#fff}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0;padding:20px 28px;max-width:1320px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}
.muted{color:var(--muted)} code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}
pre{background:#f6f8fa;padding:10px;border-radius:6px;overflow:auto;max-height:420px}
table.kv{border-collapse:collapse;margin:6px 0} table.kv td{padding:3px 12px 3px 0;vertical-align:top}
table.kv td:first-child{color:var(--muted)}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:14px}
.chart{border:1px solid var(--line);border-radius:6px;padding:6px 8px;min-height:250px}
.chart .title{font-weight:600;font-size:13px;margin-bottom:2px}
.chart svg{display:block;width:100%;height:auto;overflow:visible}
.chart .legend{font-size:12px;color:var(--muted)} .legend span{margin-right:10px;white-space:nowrap}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:-1px}
.axis text{font-size:10px;fill:var(--muted)} .axis line,.axis path{stroke:#aab2bd;stroke-width:1}
.gridline{stroke:#eef1f4;stroke-width:1}
.group{border:1px solid var(--line);border-radius:6px;padding:8px 12px;margin:10px 0}
.group .q{font-size:13px} .resp{margin:6px 0 8px;padding:4px 0 4px 10px;border-left:4px solid #ccc}
.resp.correct{border-left-color:#1a9850} .resp.incorrect{border-left-color:#d73027}
.meta{font-size:12px;color:var(--muted);margin-bottom:2px}
.badge{font-weight:600;padding:0 6px;border-radius:8px;font-size:11px;color:#fff}
.badge.ok{background:#1a9850} .badge.bad{background:#d73027}
.toks{font:13px/1.9 ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre-wrap;word-break:break-all}
.tok{border-radius:2px;padding:1px 0;cursor:default} .tok.dom{box-shadow:inset 0 -2px 0 #333}
.tok:hover{outline:1px solid #333}
.scale{display:inline-block;width:220px;height:12px;vertical-align:middle;border:1px solid var(--line);
 background:linear-gradient(90deg,rgb(178,24,43),#fff,rgb(33,102,172))}
#tip{position:fixed;pointer-events:none;background:#1b1f24;color:#fff;font:12px/1.4 ui-monospace,Menlo,monospace;
 padding:6px 8px;border-radius:4px;white-space:pre;display:none;z-index:10}
"""

# The tooltip for tokens (``.tok`` with data-thr/-s/-h/-p[/-self/-adv]) and chart points (data-tip).
JS_TOOLTIP = r"""
(function(){
  var tip=document.createElement('div'); tip.id='tip'; document.body.appendChild(tip);
  function fmt(v){var x=parseFloat(v); if(!isFinite(x)) return v; var a=Math.abs(x);
    return (a!==0&&(a<1e-3||a>=1e4))?x.toExponential(3):x.toPrecision(4);}
  function text(t){
    if(t.dataset.tip) return t.dataset.tip;
    var rows=[['token',JSON.stringify(t.textContent)],['THR',fmt(t.dataset.thr)],['influence s',fmt(t.dataset.s)],
      ['entropy',fmt(t.dataset.h)],['probability',fmt(t.dataset.p)]];
    if(t.dataset.self!==undefined) rows.push(['self-term',fmt(t.dataset.self)]);
    if(t.dataset.adv!==undefined) rows.push(['token adv.',fmt(t.dataset.adv)]);
    if(t.classList.contains('dom')) rows.push(['dominant','|s| > tau']);
    return rows.map(function(r){return (r[0]+'            ').slice(0,12)+r[1];}).join('\n');}
  document.addEventListener('mouseover',function(e){var t=e.target.closest('.tok,[data-tip]');
    if(!t){tip.style.display='none';return;} tip.textContent=text(t); tip.style.display='block';});
  document.addEventListener('mousemove',function(e){tip.style.left=(e.clientX+14)+'px';tip.style.top=(e.clientY+14)+'px';});
})();
"""

JS_CHARTS = r"""
(function(){
  var NS='http://www.w3.org/2000/svg', W=420, H=210, M={l:52,r:10,t:8,b:30};
  var COLORS=['#2166ac','#d6604d','#1a9850','#762a83','#e08214','#35978f','#8c510a','#c51b7d'];
  function el(tag,attrs,parent){var e=document.createElementNS(NS,tag);
    for(var k in attrs) e.setAttribute(k,attrs[k]); if(parent) parent.appendChild(e); return e;}
  function ticks(lo,hi,n){if(lo===hi){lo-=1;hi+=1;} var step=Math.pow(10,Math.floor(Math.log10((hi-lo)/n)));
    var err=(hi-lo)/n/step; step*=err>=7.5?10:err>=3.5?5:err>=1.5?2:1;
    var out=[]; for(var v=Math.ceil(lo/step)*step; v<=hi+step*1e-9; v+=step) out.push(+v.toPrecision(12)); return out;}
  function fmt(v){var a=Math.abs(v); return (a!==0&&(a<1e-3||a>=1e5))?v.toExponential(1):(+v.toPrecision(4)).toString();}
  function frame(div,spec){
    var t=document.createElement('div'); t.className='title'; t.textContent=spec.title; div.appendChild(t);
    var svg=el('svg',{viewBox:'0 0 '+W+' '+H,role:'img','aria-label':spec.title}); div.appendChild(svg);
    var lg=document.createElement('div'); lg.className='legend'; div.appendChild(lg);
    spec.series.forEach(function(s,i){var sp=document.createElement('span'); var sw=document.createElement('i');
      sw.style.background=s.color||COLORS[i%COLORS.length]; sp.appendChild(sw); sp.appendChild(document.createTextNode(s.name)); lg.appendChild(sp);});
    if(spec.note){var n=document.createElement('div'); n.className='legend'; n.textContent=spec.note; div.appendChild(n);}
    return svg;}
  function axes(svg,xs,ys,xlabel,ylabel,xticks){
    var g=el('g',{'class':'axis'},svg);
    ys.ticks.forEach(function(v){var y=ys.f(v); el('line',{x1:M.l,x2:W-M.r,y1:y,y2:y,'class':'gridline'},g);
      el('text',{x:M.l-4,y:y+3,'text-anchor':'end'},g).textContent=fmt(v);});
    el('path',{d:'M'+M.l+','+M.t+'V'+(H-M.b)+'H'+(W-M.r),fill:'none'},g);
    xticks.forEach(function(tk){el('text',{x:tk[0],y:H-M.b+13,'text-anchor':'middle'},g).textContent=tk[1];});
    if(xlabel) el('text',{x:(M.l+W-M.r)/2,y:H-3,'text-anchor':'middle'},g).textContent=xlabel;
    if(ylabel){var yl=el('text',{x:11,y:(M.t+H-M.b)/2,'text-anchor':'middle',transform:'rotate(-90 11 '+((M.t+H-M.b)/2)+')'},g); yl.textContent=ylabel;}}
  function scale(lo,hi,a,b){var tk=ticks(lo,hi,5); lo=Math.min(lo,tk[0]); hi=Math.max(hi,tk[tk.length-1]); if(lo===hi){lo-=1;hi+=1;}
    return {ticks:tk,f:function(v){return a+(v-lo)/(hi-lo)*(b-a);}};}
  function lineChart(div,spec){
    var svg=frame(div,spec), xsAll=[], ysAll=[], c=spec.xsymlog;
    var tx=c?function(x){return (x<0?-1:1)*Math.log10(1+Math.abs(x)/c);}:function(x){return x;};
    var inv=c?function(u){return (u<0?-1:1)*c*(Math.pow(10,Math.abs(u))-1);}:function(u){return u;};
    spec.series.forEach(function(s){s.x0=s.x; s.x=s.x.map(tx);});
    spec.series.forEach(function(s){s.x.forEach(function(x,i){if(s.y[i]!==null){xsAll.push(x);ysAll.push(s.y[i]);}});});
    if(!xsAll.length) throw new Error('chart "'+spec.title+'" has no data');
    var xmin=Math.min.apply(null,xsAll), xmax=Math.max.apply(null,xsAll);
    var ymin=spec.ymin!==undefined?Math.min(spec.ymin,Math.min.apply(null,ysAll)):Math.min.apply(null,ysAll);
    var ymax=Math.max.apply(null,ysAll);
    var xs=scale(xmin,xmax,M.l+4,W-M.r-4), ys=scale(ymin,ymax,H-M.b,M.t);
    var xt=xs.ticks.filter(function(v){return !spec.xint||Math.abs(v-Math.round(v))<1e-9;});
    if(c){var top=Math.max(Math.abs(inv(xmin)),Math.abs(inv(xmax))), lo=Math.ceil(Math.log10(c)), hi=Math.floor(Math.log10(top)),
      step=Math.max(1,Math.ceil((hi-lo+1)/3)); xt=[0];
      for(var e=hi;e>=lo;e-=step){if(tx(Math.pow(10,e))<=xmax) xt.push(tx(Math.pow(10,e))); if(tx(-Math.pow(10,e))>=xmin) xt.unshift(tx(-Math.pow(10,e)));}}
    axes(svg,xs,ys,spec.xlabel,spec.ylabel,xt.map(function(v){return [xs.f(v),fmt(inv(v))];}));
    spec.series.forEach(function(s,si){var c=s.color||COLORS[si%COLORS.length], d='', pen=false, n=0;
      s.x.forEach(function(x,i){var y=s.y[i]; if(y===null){pen=false;return;} d+=(pen?'L':'M')+xs.f(x).toFixed(1)+','+ys.f(y).toFixed(1); pen=true; n++;});
      el('path',{d:d,fill:'none',stroke:c,'stroke-width':1.8,'class':'series'},svg);
      if(n<=40) s.x.forEach(function(x,i){if(s.y[i]===null) return;
        var p=el('circle',{cx:xs.f(x),cy:ys.f(s.y[i]),r:2.6,fill:c},svg);
        p.setAttribute('data-tip',s.name+'\n'+(spec.xlabel||'x')+' '+fmt(s.x0[i])+'\n'+fmt(s.y[i]));});});}
  function barChart(div,spec){
    var svg=frame(div,spec), cats=spec.categories, nS=spec.series.length, tops=[0];
    cats.forEach(function(_,ci){var acc=0; spec.series.forEach(function(s){var v=s.values[ci]||0; acc+=v; tops.push(spec.stacked?acc:v);});});
    var ys=scale(0,Math.max.apply(null,tops),H-M.b,M.t), band=(W-M.l-M.r)/cats.length;
    var every=Math.ceil(cats.length/12);
    axes(svg,null,ys,spec.xlabel,spec.ylabel,cats.map(function(c,ci){return [M.l+band*(ci+0.5),ci%every?'':c];}));
    cats.forEach(function(c,ci){var base=0;
      spec.series.forEach(function(s,si){var v=s.values[ci]||0, col=s.color||COLORS[si%COLORS.length], x, w, y0, y1;
        if(spec.stacked){w=band*0.7; x=M.l+band*ci+band*0.15; y0=ys.f(base); base+=v; y1=ys.f(base);}
        else{w=band*0.8/nS; x=M.l+band*ci+band*0.1+w*si; y0=ys.f(0); y1=ys.f(v);}
        var r=el('rect',{x:x,y:Math.min(y0,y1),width:Math.max(w,0.5),height:Math.abs(y0-y1),fill:col,'class':'series'},svg);
        r.setAttribute('data-tip',s.name+'\n'+(spec.xlabel||'')+' '+c+'\n'+fmt(v));});});}
  window.THRCharts={line:lineChart,bar:barChart};
})();
"""

JS_MAIN = r"""
(function(){
  var data=JSON.parse(document.getElementById('thr-data').textContent), drawn=0, failed=0;
  (data.charts||[]).forEach(function(spec){var div=document.getElementById(spec.id);
    try{window.THRCharts[spec.kind](div,spec); drawn++;}
    catch(err){failed++; div.textContent='chart failed: '+err.message; console.error('chart '+spec.id+': '+err.message);}});
  document.body.setAttribute('data-rendered',String(drawn));
  if(failed) document.body.setAttribute('data-failed',String(failed));
  document.title=document.title+' \u2713';
})();
"""

ERROR_CATCHER = (
    "<script>window.addEventListener('error',function(e){var h=document.documentElement;"
    "h.setAttribute('data-errors',(h.getAttribute('data-errors')||'')+e.message+';');});</script>"
)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def clean_json(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def json_script(data: Any) -> str:
    """``<script type="application/json" id="thr-data">`` with ``</`` escaped."""
    text = json.dumps(clean_json(data), ensure_ascii=False, allow_nan=False).replace("</", "<\\/")
    return f'<script type="application/json" id="thr-data">{text}</script>'


def page(title: str, body: str, data: dict[str, Any] | None = None) -> str:
    """A complete HTML document: inline CSS, the error catcher, ``body``, tooltip and chart scripts."""
    scripts = [JS_TOOLTIP]
    if data is not None:
        scripts += [JS_CHARTS, JS_MAIN]
    inline = "".join(f"<script>{s}</script>" for s in scripts)
    payload = json_script(data) if data is not None else ""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{esc(title)}</title>'
        f"<style>{CSS}</style>{ERROR_CATCHER}</head>\n<body>\n{body}\n{payload}{inline}</body></html>\n"
    )
