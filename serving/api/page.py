"""``/``: a page where a person uploads an image and sees every task's output."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>polyhead</title>
<style>
 body{font:15px system-ui,sans-serif;margin:2em;max-width:1100px}
 .grid{display:flex;flex-wrap:wrap;gap:16px}.card{border:1px solid #ccc;padding:8px;border-radius:6px}
 .card img,.card canvas{width:256px;image-rendering:pixelated;display:block}
 #err{color:#b00}
</style></head><body>
<h1>polyhead</h1>
<p>Upload an image: the model runs once and returns every task.</p>
<p><select id="model"></select> <input type="file" id="file" accept="image/*">
 <input id="key" placeholder="API key (if required)"></p>
<p id="err"></p><div id="out" class="grid"></div>
<script>
const palette=[[0,0,0],[230,25,75],[60,180,75],[255,225,25],[0,130,200],[245,130,48],
 [145,30,180],[70,240,240],[240,50,230],[210,245,60],[250,190,212],[0,128,128]];
function hdrs(){const k=document.getElementById('key').value;return k?{'X-API-Key':k}:{}}
async function models(){const r=await fetch('v1/models',{headers:hdrs()});const j=await r.json();
 const s=document.getElementById('model');s.innerHTML='';
 for(const m of (j.models||[])){const o=document.createElement('option');o.textContent=m.name;s.appendChild(o)}}
function card(title){const d=document.createElement('div');d.className='card';
 const h=document.createElement('b');h.textContent=title;d.appendChild(h);
 document.getElementById('out').appendChild(d);return d}
function png(enc){const i=new Image();i.src='data:image/png;base64,'+enc.data;return i}
function classMap(enc,d){const img=png(enc);img.onload=()=>{const c=document.createElement('canvas');
 c.width=img.width;c.height=img.height;const x=c.getContext('2d');x.drawImage(img,0,0);
 const p=x.getImageData(0,0,c.width,c.height);for(let i=0;i<p.data.length;i+=4){
 const col=palette[p.data[i]%palette.length];p.data[i]=col[0];p.data[i+1]=col[1];p.data[i+2]=col[2]}
 x.putImageData(p,0,0);d.appendChild(c)}}
function text(d,s){const p=document.createElement('div');p.textContent=s;d.appendChild(p)}
document.getElementById('file').onchange=async e=>{
 const f=e.target.files[0];if(!f)return;document.getElementById('out').innerHTML='';
 document.getElementById('err').textContent='';
 const src=card('input');const im=new Image();im.src=URL.createObjectURL(f);src.appendChild(im);
 const fd=new FormData();fd.append('file',f);
 const m=document.getElementById('model').value;
 const r=await fetch('v1/models/'+encodeURIComponent(m)+'/predict?encoding=png',{method:'POST',body:fd,headers:hdrs()});
 const j=await r.json();if(!r.ok){document.getElementById('err').textContent=j.error;return}
 for(const [name,t] of Object.entries(j.predictions[0].tasks)){const d=card(name+' ('+t.kind+')');
  if(t.kind==='segmentation'){classMap(t.map,d);
   text(d,t.classes.map(c=>c.label+' '+(100*c.share).toFixed(1)+'%').join(', '))}
  else if(t.kind==='depth'){d.appendChild(png(t.map));
   text(d,'min '+t.min.toFixed(2)+' max '+t.max.toFixed(2)+' mean '+t.mean.toFixed(2)+' '+(t.units||''))}
  else if(t.kind==='normals'){d.appendChild(png(t.map))}
  else if(t.probability){d.appendChild(png(t.probability))}
  else if(t.kind==='classification'){text(d,t.top_k.map(c=>c.label+' '+c.probability.toFixed(2)).join(', '))}
  else if(t.kind==='multilabel'){text(d,Object.entries(t.scores).map(([k,v])=>k+' '+v.toFixed(2)).join(', '))}
  else{text(d,JSON.stringify(t))}}};
models();
</script></body></html>"""


@router.get("/", response_class=HTMLResponse)
async def index() -> str:
    """The upload page."""
    return _PAGE
