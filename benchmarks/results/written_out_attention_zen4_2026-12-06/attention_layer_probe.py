import time, torch, sys
torch.manual_seed(0); torch.set_num_threads(2)
from r1train.packing import _packed_mask
H,KV,D=9,3,64
def build(R,P,S,lo,hi):
    rows=[]
    for r in range(R):
        s=[0]*P
        for j in range(1,S+1): s+=[j]*int(torch.randint(lo,hi+1,()))
        rows.append(s)
    L=max(map(len,rows)); L=(L+31)//32*32
    seg=torch.tensor([s+[-1]*(L-len(s)) for s in rows])
    return L,_packed_mask(seg,"sdpa")
def sdpa(q,k,v,bm,am): return torch.nn.functional.scaled_dot_product_attention(q,k,v,attn_mask=bm,enable_gqa=True)
def gqa_bf16(q,k,v,bm,am):
    R,_,L,_=q.shape
    s=torch.matmul(q.reshape(R,KV,3*L,D),k.transpose(-1,-2)).view(R,KV,3,L,L)*0.125+am.unsqueeze(2)
    p=torch.softmax(s.float(),dim=-1).to(q.dtype).view(R,KV,3*L,L)
    return torch.matmul(p,v).view(R,H,L,D)
def gqa_where(q,k,v,bm,am):
    R,_,L,_=q.shape
    s=torch.matmul(q.reshape(R,KV,3*L,D),k.transpose(-1,-2)).view(R,KV,3,L,L).float()*0.125
    s=s.masked_fill(~bm.unsqueeze(2),float("-inf"))
    p=torch.softmax(s,dim=-1).to(q.dtype).view(R,KV,3*L,L)
    return torch.matmul(p,v).view(R,H,L,D)
def gqa_f32out(q,k,v,bm,am):
    R,_,L,_=q.shape
    s=torch.matmul(q.reshape(R,KV,3*L,D).float(),k.transpose(-1,-2).float()).view(R,KV,3,L,L)*0.125
    s=s.masked_fill(~bm.unsqueeze(2),float("-inf"))
    p=torch.softmax(s,dim=-1).to(q.dtype).view(R,KV,3*L,L)
    return torch.matmul(p,v).view(R,H,L,D)
fns=[("sdpa",sdpa),("gqa_bf16",gqa_bf16),("gqa_where",gqa_where),("gqa_f32mm",gqa_f32out)]
for R,P,S,lo,hi in [(8,100,8,12,30),(16,100,8,12,30),(8,60,8,12,30),(6,100,8,20,60),(4,100,8,40,100)]:
    L,bm=build(R,P,S,lo,hi); am=torch.zeros(bm.shape,dtype=torch.bfloat16).masked_fill(~bm,torch.finfo(torch.bfloat16).min)
    q=torch.randn(R,H,L,D,dtype=torch.bfloat16,requires_grad=True)
    k=torch.randn(R,KV,L,D,dtype=torch.bfloat16,requires_grad=True)
    v=torch.randn(R,KV,L,D,dtype=torch.bfloat16,requires_grad=True)
    g=torch.randn(R,H,L,D,dtype=torch.bfloat16)
    ref=None; out=[]
    for name,fn in fns:
        f=torch.compile(fn)
        tf,tb=[],[]
        for _ in range(7):
            q.grad=None
            t0=time.perf_counter(); o=f(q,k,v,bm,am); t1=time.perf_counter(); o.backward(g); t2=time.perf_counter()
            tf.append(t1-t0); tb.append(t2-t1)
        o=o.float(); 
        if ref is None: ref=(o.detach(),q.grad.float())
        err=(o-ref[0]).abs().max().item(); gerr=((q.grad.float()-ref[1]).norm()/ref[1].norm()).item()
        out.append(f"{name} {min(tf[2:])*1e3:5.1f}/{min(tb[2:])*1e3:5.1f} e{err:.3f} g{gerr:.3f}")
    print(f"R={R} L={L}: "+" | ".join(out), flush=True)
